"What a user has beside an output is never deleted, and crafted files get a clear error instead of running code or filling memory."
import io, json, os, re, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest, torch


# ---- the user's hidden files beside an output

USER_HIDDEN = ['.bashrc.original', '.vimrc.20240101', '.env.staging1', '.notes.abcd1234.txt', '.final.old']

def _user_files(d: Path):
    for n in USER_HIDDEN: (d/n).write_text('mine')
    (d/'.mozilla.backup01').mkdir(); (d/'.mozilla.backup01'/'prefs.js').write_text('mine')

def _still_there(d: Path):
    for n in USER_HIDDEN: assert (d/n).read_text() == 'mine', n
    assert (d/'.mozilla.backup01'/'prefs.js').read_text() == 'mine'


def test_writing_a_video_keeps_the_users_hidden_files(tmp_path):
    from vb_nb.core import write_video, remove_stale_temps
    _user_files(tmp_path)
    write_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path/'video.mp4')
    _still_there(tmp_path)
    assert remove_stale_temps(tmp_path) == []
    _still_there(tmp_path)


def test_writing_a_model_folder_keeps_the_users_hidden_files(tmp_path):
    from vb_nb.core import atomic_folder
    _user_files(tmp_path)
    for i in range(2):
        with atomic_folder(tmp_path/'final') as t: (t/'config.json').write_text(str(i))
    _still_there(tmp_path)
    assert (tmp_path/'final'/'config.json').read_text() == '1'


def test_a_killed_writes_temporary_is_still_swept(tmp_path):
    from vb_nb.core import remove_stale_temps
    kill = f"from vb_nb.core import atomic_path; import os; t = atomic_path({str(tmp_path/'out.mp4')!r}).__enter__(); t.write_text('half'); os._exit(9)"
    assert subprocess.run([sys.executable, '-c', kill]).returncode == 9
    (left,) = os.listdir(tmp_path)
    _user_files(tmp_path)
    assert [p.name for p in remove_stale_temps(tmp_path)] == [left]
    _still_there(tmp_path)


# ---- weights are written with the umask's permissions, as configs are

def test_saved_weights_are_readable_as_configs_are(tmp_path):
    from safetensors.torch import save_file
    from vb_nb.core import atomic_folder, atomic_path
    mask = os.umask(0o022); os.umask(0o022)
    try:
        with atomic_folder(tmp_path/'model') as t:
            save_file({'w': torch.zeros(2)}, str(t/'diffusion_pytorch_model.safetensors')); (t/'config.json').write_text('{}')
        with atomic_path(tmp_path/'layers.safetensors') as t: save_file({'w': torch.zeros(2)}, str(t))
        modes = {p.name: p.stat().st_mode & 0o777 for p in [*(tmp_path/'model').iterdir(), tmp_path/'layers.safetensors']}
        assert set(modes.values()) == {0o644}, modes
    finally: os.umask(mask)



def test_the_clip_tokenizer_and_toy_clip_follow_the_umask(tmp_path):
    import gzip
    from transformers import CLIPModel
    from vb_nb.clip import CLIP_NUM_MERGES, _save_toy_clip, toy_clip_config, write_clip_tokenizer
    bpe = tmp_path/'bpe.txt.gz'
    with gzip.open(bpe, 'wt') as f: f.write('\n'.join(['#version: 0.2', *(f'a{i} b{i}' for i in range(CLIP_NUM_MERGES))]))
    mask = os.umask(0o027)
    try:
        tok = write_clip_tokenizer(bpe, tmp_path/'tokenizer')
        _save_toy_clip(CLIPModel(toy_clip_config()), tmp_path/'toy_clip', {'step': []})
    finally: os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for d in (tok, tmp_path/'toy_clip') for p in d.iterdir()}
    assert len(modes) == 6 and set(modes.values()) == {0o640}, modes
    assert (tmp_path/'toy_clip').stat().st_mode & 0o777 == 0o750

# ---- image prompts: only the formats an image prompt comes in; never Ghostscript

EPS = b'%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n'

@pytest.fixture
def ghostscript_spy(monkeypatch):
    from PIL import EpsImagePlugin
    calls = []
    def spy(*a, **k): calls.append(a); raise OSError('Ghostscript was called')
    monkeypatch.setattr(EpsImagePlugin, 'Ghostscript', spy)
    return calls


def test_an_eps_named_png_is_refused_by_generate_without_ghostscript(tmp_path, ghostscript_spy):
    from vb_nb.sample import load_image_prompt
    (tmp_path/'cat.png').write_bytes(EPS)
    with pytest.raises(ValueError, match='PNG, JPEG, GIF, BMP or WebP'): load_image_prompt(tmp_path/'cat.png')
    assert ghostscript_spy == []


def test_an_eps_upload_is_refused_by_the_demo_without_ghostscript(ghostscript_spy):
    from vb_nb.demo import read_upload
    with pytest.raises(ValueError, match='PNG, JPEG, GIF, BMP or WebP'): read_upload('cat.png', EPS)
    assert ghostscript_spy == []


def test_the_usual_formats_still_open(tmp_path):
    from PIL import Image
    from vb_nb.core import open_image
    from vb_nb.demo import read_upload
    for fmt in ('PNG', 'JPEG', 'GIF', 'BMP', 'WEBP'):
        buf = io.BytesIO(); Image.new('RGB', (16, 16), (200, 30, 30)).save(buf, format=fmt)
        assert open_image(buf.getvalue()).size == (16, 16) and read_upload(f'x.{fmt.lower()}', buf.getvalue()).size == (16, 16)


# ---- a training run's folder: the run's alone, locked while it trains, resumed only with its own settings

from vb_nb.train import TrainConfig, fit, checkpoints, NonFiniteLoss

class Linear(torch.nn.Module):
    def __init__(self): super().__init__(); torch.manual_seed(0); self.lin = torch.nn.Linear(4, 1)
    def forward(self, x): return self.lin(x)

def mse(model, batch): x, y = batch; return ((model(x) - y)**2).mean()
def toy_batch(micro): x = torch.randn(8, 4); return x, x.sum(1, keepdim=True)

def linear_run(out, resume=True, model=None, loss=mse, **kw):
    cfg = TrainConfig(**{**dict(stage='base', out_dir=str(out), max_steps=3, checkpoint_every=1, lr=0.1), **kw})
    return fit(cfg, model or Linear(), loss, toy_batch, resume=resume)


def test_a_folder_that_is_not_a_run_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path/'final').mkdir(); (tmp_path/'final'/'thesis.tex').write_text('mine')
    (tmp_path/'summary.json').write_text('mine')
    (tmp_path/'checkpoints'/'.tmp_step_0000001').mkdir(parents=True); (tmp_path/'checkpoints'/'.tmp_step_0000001'/'notes.txt').write_text('mine')
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*'))
    with pytest.raises(ValueError, match='not a training run'): linear_run(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*')) == before
    assert (tmp_path/'final'/'thesis.tex').read_text() == 'mine' and (tmp_path/'summary.json').read_text() == 'mine'


def test_a_users_step_folders_are_not_resumed_from(tmp_path):
    (tmp_path/'checkpoints'/'step_0000002').mkdir(parents=True); (tmp_path/'checkpoints'/'step_0000002'/'state.json').write_text('{}')
    with pytest.raises(ValueError): linear_run(tmp_path)
    assert (tmp_path/'checkpoints'/'step_0000002'/'state.json').read_text() == '{}'


def test_a_run_records_its_settings_and_a_resume_with_others_is_refused(tmp_path):
    linear_run(tmp_path, max_steps=2)
    assert json.loads((tmp_path/'training_run.json').read_text())['config']['lr'] == 0.1
    for other in (dict(lr=0.2), dict(seed=1), dict(grad_accum=2)):
        with pytest.raises(ValueError, match=f"{next(iter(other))} was"): linear_run(tmp_path, max_steps=3, **other)
    assert [p.name for p in checkpoints(tmp_path)] == ['step_0000001', 'step_0000002']
    assert len(linear_run(tmp_path, max_steps=3, checkpoint_every=3)) == 3      # more steps, another interval: the same run, resumed


def test_no_resume_starts_afresh_and_the_next_run_does_not_resume_the_old_one(tmp_path):
    linear_run(tmp_path, max_steps=3)                       # checkpoints at steps 2 and 3
    (tmp_path/'mine.txt').write_text('mine')
    losses = linear_run(tmp_path, resume=False, max_steps=1, lr=0.05)   # a new run, other settings
    assert len(losses) == 1 and [p.name for p in checkpoints(tmp_path)] == ['step_0000001']
    assert len(linear_run(tmp_path, max_steps=2, lr=0.05)) == 2        # resumes the new run, from its step 1
    assert (tmp_path/'mine.txt').read_text() == 'mine'


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    script = f"""
import sys, time, torch; sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_hostile import linear_run, mse
def slow(m, b): time.sleep(0.3); return mse(m, b)
linear_run({str(tmp_path/'run')!r}, loss=slow, max_steps=40)
"""
    p = subprocess.Popen([sys.executable, '-c', script], env={**os.environ, 'OMP_NUM_THREADS': '1'})
    try:
        for _ in range(600):
            if (tmp_path/'run'/'checkpoints').is_dir(): break
            time.sleep(0.1)
        assert p.poll() is None, 'the first run ended too soon'
        with pytest.raises(ValueError, match='in use'): linear_run(tmp_path/'run', max_steps=40)
    finally: p.kill(); p.wait()
    assert len(linear_run(tmp_path/'run', max_steps=40)) == 40      # once it is gone, the folder is free again: its lock died with it


def test_nan_weights_from_a_corrupt_optimizer_state_stop_the_run_and_are_never_saved(tmp_path):
    linear_run(tmp_path, max_steps=1)
    (ck,) = checkpoints(tmp_path)
    st = torch.load(ck/'optimizer.pt', weights_only=True)
    for s in st['optimizer']['state'].values(): s['exp_avg'].fill_(float('nan'))
    torch.save(st, ck/'optimizer.pt')
    with pytest.raises(NonFiniteLoss, match='last good checkpoint'): linear_run(tmp_path, max_steps=3)
    assert [p.name for p in checkpoints(tmp_path)] == ['step_0000001']


def test_a_checkpoint_is_never_written_with_nan_weights(tmp_path):
    from vb_nb.train import save_checkpoint
    m = Linear(); opt = torch.optim.AdamW(m.parameters()); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with torch.no_grad(): m.lin.weight[0, 0] = float('nan')
    with pytest.raises(NonFiniteLoss): save_checkpoint(tmp_path, 1, m, opt, sched, [0.1], TrainConfig(stage='base', out_dir=str(tmp_path)))
    assert checkpoints(tmp_path) == []


def test_checkpoint_weights_are_readable_as_configs_are(tmp_path):
    mask = os.umask(0o022)
    try: linear_run(tmp_path, max_steps=1)
    finally: os.umask(mask)
    (ck,) = checkpoints(tmp_path)
    assert {p.name: p.stat().st_mode & 0o777 for p in ck.iterdir()} == {n: 0o644 for n in ('trainable.safetensors', 'optimizer.pt', 'config.json', 'state.json')}


# ---- training inputs that are not what a run writes: a clear error naming the file

@pytest.mark.parametrize('damage, says', [
    (lambda ck: (ck/'state.json').write_text('{"step": "3", "losses": 7}'), 'state.json'),
    (lambda ck: torch.save({}, ck/'optimizer.pt'), 'optimizer.pt'),
    (lambda ck: __import__('safetensors.torch').torch.save_file({}, str(ck/'trainable.safetensors')), 'lacks 2 of the 2 trainable weights'),
    (lambda ck: __import__('safetensors.torch').torch.save_file({'lin.weight': torch.zeros(1, 4), 'lin.bias': torch.zeros(1), 'frozen.weight': torch.zeros(3)},
                                                                 str(ck/'trainable.safetensors')), 'does not train'),
    (lambda ck: __import__('safetensors.torch').torch.save_file({'lin.weight': torch.zeros(2, 4), 'lin.bias': torch.zeros(1)}, str(ck/'trainable.safetensors')), r'is \(2, 4\)'),
])
def test_a_damaged_checkpoint_gets_a_clear_error(tmp_path, damage, says):
    class WithFrozen(Linear):
        def __init__(self): super().__init__(); self.frozen = torch.nn.Linear(3, 1, bias=False).requires_grad_(False); self.frozen.weight.data = torch.ones(3)
    linear_run(tmp_path, max_steps=1, model=WithFrozen())
    (ck,) = checkpoints(tmp_path); damage(ck)
    m = WithFrozen()
    with pytest.raises(ValueError, match=says): linear_run(tmp_path, max_steps=2, model=m)
    assert torch.equal(m.frozen.weight, torch.ones(3))           # a frozen weight is never overwritten


def test_a_config_file_with_wrong_values_gets_a_clear_error(tmp_path, capsys):
    from vb_nb.train import main
    for text, says in (('', 'not a readable JSON config'), ('[1, 2]', 'JSON object'), ('{"lr": "fast"}', 'lr must be a finite number'),
                       ('{"max_grad_norm": NaN}', 'max_grad_norm must be a finite number')):
        (tmp_path/'c.json').write_text(text)
        with pytest.raises(SystemExit) as e: main(['--stage', 'coarse', '--config', str(tmp_path/'c.json'), '--out', str(tmp_path/'o')])
        assert e.value.code == 2 and says in capsys.readouterr().err, text
    with pytest.raises(SystemExit) as e: main(['--stage', 'coarse', '--config', str(tmp_path/'missing.json'), '--out', str(tmp_path/'o')])
    assert e.value.code == 2 and 'no config file' in capsys.readouterr().err
    with pytest.raises(SystemExit): main(['--stage', 'coarse', '--max-grad-norm', 'nan', '--out', str(tmp_path/'o')])
    assert 'max_grad_norm' in capsys.readouterr().err and not (tmp_path/'o').exists()


def test_a_skipped_record_with_wrong_types_gets_a_clear_error(tmp_path):
    from vb_nb.train import Batches
    (tmp_path/'skipped.json').write_text('{"0": "corrupt"}')
    with pytest.raises(ValueError, match='skipped.json'): Batches([1, 2], 1, out_dir=tmp_path)


def test_a_dataset_with_no_readable_clip_gets_a_clear_error():
    from vb_nb.core import VideoReadError
    from vb_nb.train import random_batch
    class Unreadable(torch.utils.data.Dataset):
        def __len__(self): return 3
        def __getitem__(self, i): raise VideoReadError(f'v{i}.mp4', 'corrupt video stream')
    with pytest.raises(ValueError, match='no item of the dataset can be read'): random_batch(Unreadable(), 2, {})


# ---- a pipeline folder's tokenizer and configs: capped and checked before anything is built

@pytest.fixture(scope='module')
def pipeline_folder(tmp_path_factory):
    from vb_nb.sample import assemble
    torch.set_num_threads(1)
    return assemble(tmp_path_factory.mktemp('pipe')/'toy')

def _copy_pipeline(pipeline_folder, tmp_path):
    import shutil
    shutil.copytree(pipeline_folder, tmp_path/'p'); return tmp_path/'p'

def _edit(path, **change):
    cfg = json.loads(path.read_text()); cfg.update(change); path.write_text(json.dumps(cfg))


@pytest.mark.parametrize('value', ['absent', 1e12])
def test_a_pipeline_folders_tokenizer_is_capped_at_77(pipeline_folder, tmp_path, value):
    from vb_nb.sample import load_model
    p = _copy_pipeline(pipeline_folder, tmp_path)
    f = p/'tokenizer'/'tokenizer_config.json'; cfg = json.loads(f.read_text()); cfg.pop('model_max_length', None)
    if value != 'absent': cfg['model_max_length'] = value
    f.write_text(json.dumps(cfg))
    pipe = load_model(p, device='cpu')
    assert pipe.tokenizer.model_max_length == 77                     # checked first: an uncapped one would try to pad to 1e12
    from vb_nb.clip import encode_text
    assert encode_text(pipe.text_encoder, pipe.tokenizer, ['a box drifts to the right']).shape[1] == 77


CRAFTED = [   # part, file, change, what the error says; the first three would ask for terabytes or gigabytes if built
    ('unet', 'config.json', dict(block_out_channels=[32, 1_000_000]), 'block_out_channels is'),
    ('adapter', 'config.json', 'hidden_dim', 'hidden_dim is 300000000'),
    ('feature_extractor', 'preprocessor_config.json', dict(size={'shortest_edge': 60000}), 'size is'),
    ('vae', 'config.json', dict(sample_size=-64), 'sample_size is -64'),
    ('vae', 'config.json', dict(block_out_channels=[32], down_block_types=['DownEncoderBlock2D'], up_block_types=['UpDecoderBlock2D']), '2 to 8 blocks'),
    ('scheduler', 'scheduler_config.json', dict(num_train_timesteps=0), 'num_train_timesteps is 0'),
    ('adapter', 'config.json', 'no mapper', "lacks ['mapper_config'"),
]

@pytest.mark.parametrize('part, file, change, says', CRAFTED, ids=[c[3].split()[0] + '-' + c[0] for c in CRAFTED])
def test_a_crafted_config_is_named_before_anything_is_built(pipeline_folder, tmp_path, part, file, change, says):
    from vb_nb.sample import load_model
    p = _copy_pipeline(pipeline_folder, tmp_path); f = p/part/file
    if change == 'hidden_dim': cfg = json.loads(f.read_text()); cfg['mapper_config']['hidden_dim'] = 300_000_000; f.write_text(json.dumps(cfg))
    elif change == 'no mapper': cfg = json.loads(f.read_text()); del cfg['mapper_config']; f.write_text(json.dumps(cfg))
    else: _edit(f, **change)
    with pytest.raises(ValueError, match=re.escape(says)) as e: load_model(p, device='cpu')
    assert file in str(e.value)


@pytest.mark.parametrize('index, says', [('[["diffusers", "UNetMotionModel"]]', 'not a JSON object'), ('[' * 50_000 + ']' * 50_000, 'not a readable JSON config'),
                                         ('{"unet": [[["diffusers"]]]}', 'not a [library, class] pair')])
def test_a_crafted_model_index_is_named(pipeline_folder, tmp_path, index, says):
    from vb_nb.sample import load_model
    p = _copy_pipeline(pipeline_folder, tmp_path); (p/'model_index.json').write_text(index)
    with pytest.raises(ValueError, match=re.escape(says)): load_model(p, device='cpu')


def test_nan_weights_are_named_at_loading_not_blamed_on_the_guidance(pipeline_folder, tmp_path):
    from safetensors.torch import load_file, save_file
    from vb_nb.sample import load_model
    p = _copy_pipeline(pipeline_folder, tmp_path)
    (f,) = (p/'vae').glob('*.safetensors'); w = load_file(str(f)); k = next(iter(w)); w[k] = torch.full_like(w[k], float('nan')); save_file(w, str(f))
    with pytest.raises(ValueError, match="vae has NaN or infinite weights"): load_model(p, device='cpu')


# ---- an adapter folder whose config.json and weights do not belong together: the file, the tensor, both shapes and the fix

def _damage_adapter(folder, cfg=None, weights=None):
    from safetensors.torch import load_file, save_file
    if cfg:
        c = json.loads((folder/'config.json').read_text()); cfg(c); (folder/'config.json').write_text(json.dumps(c))
    if weights:
        f = folder/'diffusion_pytorch_model.safetensors'; w = load_file(str(f)); weights(w); save_file(w, str(f))

def _first(w, prefix): return next(k for k in w if k.startswith(prefix))

MISFITS = [   # what is changed in the adapter folder, what the error says, whether the adapter alone (before a UNet) can tell
    ('hidden_dim', dict(cfg=lambda c: c['mapper_config'].update(hidden_dim=100)), ['mapper.cls_mlps.0.0.weight is (', 'makes it (100,', 'config.json', 'do not belong together'], True),
    ('tokens_per_layer', dict(cfg=lambda c: c['mapper_config'].update(tokens_per_layer=2)), ['mapper.cls_mlps.0.6.weight is (', 'mapper_config of', 'save the adapter again'], True),
    ('mapper_weight', dict(weights=lambda w: w.update({_first(w, 'mapper.'): torch.zeros(5, 3)})), ['is (5, 3) but the mapper_config', 'config.json'], True),
    ('attention_weight', dict(weights=lambda w: w.update({_first(w, 'attn1.'): torch.zeros(3, 3)})), ['attn1.', "is (3, 3) but the UNet's attention layers", 'save it again'], False),
    ('missing_weight', dict(weights=lambda w: w.pop(_first(w, 'text_kv.'))), ['lacks text_kv.', "the UNet's attention layers has"], False),
    ('extra_weight', dict(weights=lambda w: w.update({'mapper.extra': torch.zeros(2)})), ['holds mapper.extra, which the mapper_config'], True),
    ('no_layers', dict(cfg=lambda c: c['mapper_config'].pop('layers')), ["mapper_config lacks ['layers']", 'config.json'], True),
]

@pytest.mark.parametrize('change, says, alone', [m[1:] for m in MISFITS], ids=[m[0] for m in MISFITS])
def test_an_adapter_whose_config_and_weights_differ_gets_a_clear_error(pipeline_folder, tmp_path, change, says, alone):
    from vb_nb.model import VideoBoothAdapter
    from vb_nb.sample import VideoBoothPipeline, load_model
    p = _copy_pipeline(pipeline_folder, tmp_path); _damage_adapter(p/'adapter', **change)
    for load in (lambda: VideoBoothPipeline.from_pretrained(p),                 # from_pretrained, then attached to the UNet
                 lambda: load_model(adapter=p/'adapter', device='cpu')):       # the embedded model's load_adapter
        with pytest.raises(ValueError) as e: load()
        assert all(s in str(e.value) for s in [*says, str(p/'adapter')]), str(e.value)
    if alone:
        with pytest.raises(ValueError, match=re.escape(says[0])): VideoBoothAdapter.from_pretrained(p/'adapter')


def test_a_refused_adapter_leaves_the_model_as_it_was(pipeline_folder, tmp_path):
    from vb_nb.sample import load_model
    pipe = load_model(pipeline_folder, device='cpu')
    before = {k: v.clone() for k, v in pipe.adapter.state_dict().items()}
    p = _copy_pipeline(pipeline_folder, tmp_path); _damage_adapter(p/'adapter', cfg=lambda c: c['mapper_config'].update(hidden_dim=100))
    with pytest.raises(ValueError, match='do not belong together'): pipe.model.load_adapter(p/'adapter')
    after = pipe.adapter.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())
    assert pipe.adapter.mapper.config.hidden_dim != 100


def test_an_adapter_config_that_leaves_out_fields_with_defaults_loads(pipeline_folder, tmp_path):
    from vb_nb.sample import load_model
    p = _copy_pipeline(pipeline_folder, tmp_path); _damage_adapter(p/'adapter', cfg=lambda c: [c.pop(k) for k in ('splice_mode', 'posenc', 'posenc_base')])
    pipe = load_model(adapter=p/'adapter', device='cpu')            # read the config's defaults, as from_config does; no KeyError
    assert (pipe.adapter.config.splice_mode, pipe.adapter.config.posenc, pipe.adapter.config.posenc_base) == ('output', True, 10000.0)
