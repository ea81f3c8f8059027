"Training: an interrupted run resumes to the same loss curve; the command line explains what is missing."
import os, subprocess, sys
import pytest, torch
from vb_nb.train import TrainConfig, fit, main, videobooth_loss, random_batch, toy_training_data, checkpoints, NonFiniteLoss
from vb_nb.dataset import VideoPromptDataset
from vb_nb.model import VideoBooth
from vb_nb.sample import toy_model_dir


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    torch.set_num_threads(1)
    root = toy_training_data(n_clips=6, root=tmp_path_factory.mktemp('tw'), progress=False)
    return VideoPromptDataset(root, n_frames=2)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    "accelerate keeps one state per process; each test chooses its own mixed precision."
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(True); yield; AcceleratorState._reset_state(True)


class Killed(Exception): pass


def run(out, dataset, kill_after=None):
    model = VideoBooth.toy(seed=0); model.set_stage(2)
    calls = {'n': 0}
    def loss(m, b):
        if kill_after is not None and calls['n'] == kill_after: raise Killed
        calls['n'] += 1
        return videobooth_loss(m, b, 2)
    cfg = TrainConfig(stage='fine', out_dir=str(out), max_steps=6, batch_size=2, num_frames=2, checkpoint_every=2, lr=1e-3,
                      warmup_steps=2, lr_schedule='cosine')
    return fit(cfg, model, loss, lambda micro: random_batch(dataset, cfg.batch_size)), model


def test_kill_and_resume_gives_the_same_loss_curve(tmp_path, dataset):
    full, m1 = run(tmp_path/'a', dataset)
    with pytest.raises(Killed): run(tmp_path/'b', dataset, kill_after=5)      # dies during step 6, after the checkpoint at step 4
    assert [p.name for p in checkpoints(tmp_path/'b')] == ['step_0000002', 'step_0000004']
    resumed, m2 = run(tmp_path/'b', dataset)
    assert resumed == full
    for (n, p), q in zip(m1.adapter.named_parameters(), m2.adapter.parameters()): assert torch.equal(p, q), n


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, dataset):
    model = VideoBooth.toy(seed=0); model.set_stage(1)
    cfg = TrainConfig(stage='coarse', out_dir=str(tmp_path), max_steps=4, batch_size=2, num_frames=2, checkpoint_every=2)
    calls = {'n': 0}
    def loss(m, b):
        calls['n'] += 1
        l = videobooth_loss(m, b, 1)
        return l * float('nan') if calls['n'] == 3 else l
    with pytest.raises(NonFiniteLoss, match='last good checkpoint'): fit(cfg, model, loss, lambda micro: random_batch(dataset, 2))
    assert [p.name for p in checkpoints(tmp_path)] == ['step_0000002']


def test_cli_names_the_missing_stage(tmp_path):
    env = {**os.environ, 'VB_NB_OUTPUTS': str(tmp_path), 'OMP_NUM_THREADS': '1'}
    r = subprocess.run([sys.executable, '-m', 'vb_nb.train', '--stage', 'fine', '--data', str(tmp_path), '--max-steps', '1'],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert 'manifest' in r.stderr or 'train the' in r.stderr, r.stderr


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match='stage'): TrainConfig(stage='medium')
    with pytest.raises(ValueError, match='batch_size'): TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match='image_dropout'): TrainConfig(image_dropout=1.5)


def test_cli_rejects_bad_values_before_training(tmp_path, capsys):
    for args in (['--posenc', 'maybe'], ['--splice-mode', 'middle'], ['--lr-schedule', 'linear'], ['--noise-schedule', 'cosine']):
        with pytest.raises(SystemExit): main(['--stage', 'coarse', '--out', str(tmp_path)] + args)
        assert args[1] in capsys.readouterr().err
    for args in (['--noise-schedule', 'sd'], ['--text-layers', str(tmp_path/'layers.safetensors')]):    # the base's, not an adapter stage's
        with pytest.raises(SystemExit): main(['--stage', 'fine', '--out', str(tmp_path)] + args)
        assert 'belong to the base' in capsys.readouterr().err
    for stage, args, says in (('coarse', ['--min-timestep', '700'], 'belongs to the base and motion_text'), ('base', ['--min-timestep', '-1'], 'min_timestep must be'),
                              ('motion_text', ['--vae', str(toy_model_dir()/'vae'), '--unet', str(tmp_path/'no_base')], "train the 'base' stage first")):
        with pytest.raises(SystemExit): main(['--stage', stage, '--out', str(tmp_path)] + args)
        assert says in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ---- mixed precision, memory savers, real-base defaults, data problems, checkpoint files

from pathlib import Path
from vb_nb.train import train_stage, StageInputs


@pytest.fixture(scope='module')
def toy_inputs(dataset):
    t = toy_model_dir()
    return StageInputs(data=str(dataset.root), vae=str(t/'vae'), unet=str(t/'unet'), adapter=str(t/'adapter'))


def tiny_cfg(stage, out, **kw):
    return TrainConfig(**{**dict(stage=stage, out_dir=str(out), max_steps=2, batch_size=2, num_frames=2, checkpoint_every=2, sample_steps=0), **kw})


@pytest.mark.parametrize('stage', ['vae', 'base', 'motion_text', 'coarse', 'fine', 'joint'])
def test_bf16_trains_every_stage_with_frozen_weights_in_bf16(tmp_path, toy_inputs, stage):
    model, losses = train_stage(tiny_cfg(stage, tmp_path, mixed_precision='bf16'), toy_inputs)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)      # the trained weights stay fp32
    stored = [p for p in model.parameters() if id(p) not in {id(q) for q in model.adapter.parameters()}] if stage in ('coarse', 'fine', 'joint') else \
             [] if stage == 'vae' else list(model.vae.parameters())     # what the stage saves (its adapter, a base's UNet and text layers) keeps its dtype
    frozen = {p.dtype for p in stored if not p.requires_grad}
    assert frozen <= {torch.bfloat16}, frozen                                              # the frozen ones are stored as autocast uses them
    from safetensors.torch import load_file
    saved = {v.dtype for f in (tmp_path/'final').glob('*.safetensors') for v in load_file(str(f)).values()}
    assert saved == {torch.float32}, saved


@pytest.mark.parametrize('stage', ['base', 'fine'])
def test_fp16_runs_on_the_cpu(tmp_path, toy_inputs, stage):
    "A CPU has no fp16 autocast: accelerate runs the fp16 setting in fp32 there, and the run still completes."
    model, losses = train_stage(tiny_cfg(stage, tmp_path, mixed_precision='fp16'), toy_inputs)
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_two_identical_runs_start_equal(tmp_path, toy_inputs):
    "The new adapter's first weights come from --seed: two runs of one command give the same adapter."
    from safetensors.torch import load_file
    for run in ('a', 'b'): train_stage(tiny_cfg('coarse', tmp_path/run, max_steps=1, checkpoint_every=1), toy_inputs)
    a, b = (load_file(str(tmp_path/r/'final'/'diffusion_pytorch_model.safetensors')) for r in ('a', 'b'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_clip_gets_the_datasets_224px_crop(tmp_path, toy_inputs, monkeypatch):
    seen = []
    original = VideoBooth.image_tokens
    def spy(self, images): seen.append(tuple(images.shape[-2:])); return original(self, images)
    monkeypatch.setattr(VideoBooth, 'image_tokens', spy)
    train_stage(tiny_cfg('coarse', tmp_path, max_steps=1, checkpoint_every=1, text_dropout=0.0, image_dropout=0.0), toy_inputs)
    assert seen and set(seen) == {(224, 224)}, seen


def test_gradient_checkpointing_flag_reaches_the_motion_modules(tmp_path, toy_inputs):
    model, _ = train_stage(tiny_cfg('fine', tmp_path, max_steps=1, checkpoint_every=1, gradient_checkpointing=True), toy_inputs)
    blocks = [*model.unet.down_blocks, *model.unet.up_blocks]
    assert all(b.gradient_checkpointing for b in blocks)
    assert all('_checkpoint_fn' in vars(mm) for b in blocks for mm in b.motion_modules)   # the motion modules' attention recomputes too
    with pytest.raises(SystemExit): main(['--stage', 'fine', '--gradient-checkpointing', 'perhaps', '--out', str(tmp_path/'x')])


def test_workers_decode_the_batches_and_change_nothing(tmp_path, dataset):
    import os
    from vb_nb.train import Batches
    class Pid(torch.utils.data.Dataset):
        def __len__(self): return len(dataset)
        def __getitem__(self, i): return {**dataset[i], 'pid': os.getpid()}
    runs = {}
    for w in (0, 2):
        pids = []
        def loss(m, b): pids.extend(b['pid']); return videobooth_loss(m, b, 1)
        model = VideoBooth.toy(seed=0); model.set_stage(1)
        cfg = TrainConfig(stage='coarse', out_dir=str(tmp_path/str(w)), max_steps=3, batch_size=2, num_frames=2, checkpoint_every=3)
        batches = Batches(Pid(), 2, cfg.seed, num_workers=w)
        runs[w] = fit(cfg, model, loss, batches); batches.close()
        assert (set(pids) == {os.getpid()}) == (w == 0), pids
    assert runs[0] == runs[2]


def test_a_corrupt_video_is_skipped_recorded_and_not_read_again(tmp_path, toy_inputs):
    import json, shutil, warnings
    root = tmp_path/'ds'; shutil.copytree(toy_inputs.data, root)
    meta = json.loads((root/'build.json').read_text())
    videos = tmp_path/'videos'; shutil.copytree(meta['videos'], videos)
    ds = VideoPromptDataset(root, videos=videos, n_frames=2)
    for r in ds.rows[:3]: (videos/r['video']).write_bytes(b'not a video at all' * 50)
    cfg = tiny_cfg('coarse', tmp_path/'run', max_steps=2, checkpoint_every=1, batch_size=3)
    with pytest.warns(UserWarning, match='cannot be read'): _, losses = train_stage(cfg, toy_inputs, dataset=ds)
    assert len(losses) == 2
    skipped = json.loads((tmp_path/'run'/'skipped.json').read_text())
    assert skipped and {e['video'] for e in skipped.values()} <= {r['video'] for r in ds.rows[:3]}
    with warnings.catch_warnings():
        warnings.simplefilter('error', UserWarning)       # resumed: the recorded clips are not read again, so no new warning
        warnings.filterwarnings('ignore', message='(?!skipped clip)')
        _, more = train_stage(tiny_cfg('coarse', tmp_path/'run', max_steps=4, checkpoint_every=1, batch_size=3), toy_inputs, dataset=ds)
    assert len(more) == 4 and more[:2] == losses


def test_a_bug_in_reading_an_item_is_raised_not_skipped():
    class Buggy(torch.utils.data.Dataset):
        def __len__(self): return 4
        def __getitem__(self, i): return {}['pixel_values']          # a KeyError: a bug, not an unreadable file
    skip = {}
    with pytest.raises(KeyError): random_batch(Buggy(), 2, skip)
    assert skip == {}


def test_an_unreadable_item_is_skipped_for_the_next_readable_one():
    from vb_nb.core import VideoReadError
    class Half(torch.utils.data.Dataset):
        def __len__(self): return 4
        def __getitem__(self, i):
            if i % 2: raise VideoReadError(f'v{i}.mp4', 'corrupt video stream')
            return dict(x=torch.tensor([i]))
    skip = {}
    torch.manual_seed(0); b = random_batch(Half(), 6, skip)
    assert (b['x'] % 2 == 0).all() and set(skip) <= {1, 3} and skip and all('VideoReadError' in e for e in skip.values())


def test_partial_checkpoint_folders_are_removed(tmp_path, dataset):
    model = VideoBooth.toy(seed=0); model.set_stage(1)
    run = lambda steps: fit(TrainConfig(stage='coarse', out_dir=str(tmp_path), max_steps=steps, batch_size=2, num_frames=2), model,
                            lambda m, b: videobooth_loss(m, b, 1), lambda micro: random_batch(dataset, 2))
    run(1)                                        # the run's folder; then a kill while writing the next checkpoint leaves this
    left = tmp_path/'checkpoints'/'.tmp_step_0000004'; left.mkdir(parents=True); (left/'trainable.safetensors').write_bytes(b'half')
    run(2)
    assert not left.exists() and [p.name for p in checkpoints(tmp_path)] == ['step_0000001', 'step_0000002']


def _checkpoint(tmp_path, dataset):
    model = VideoBooth.toy(seed=0); model.set_stage(1)
    cfg = TrainConfig(stage='coarse', out_dir=str(tmp_path), max_steps=1, batch_size=2, num_frames=2)
    fit(cfg, model, lambda m, b: videobooth_loss(m, b, 1), lambda micro: random_batch(dataset, 2))
    return cfg, checkpoints(tmp_path)[-1]


def test_resume_on_the_cpu_a_checkpoint_written_on_cuda(tmp_path, dataset, monkeypatch):
    cfg, ck = _checkpoint(tmp_path, dataset)
    st = torch.load(ck/'optimizer.pt', weights_only=True)
    with monkeypatch.context() as m:      # as a CUDA run writes it: every storage tagged 'cuda:0'
        m.setattr(torch.serialization, 'location_tag', lambda storage: 'cuda:0')
        torch.save(st, ck/'optimizer.pt')
    assert b'cuda:0' in (ck/'optimizer.pt').read_bytes()
    model = VideoBooth.toy(seed=0); model.set_stage(1)
    losses = fit(TrainConfig(**{**cfg.__dict__, 'max_steps': 2}), model, lambda m, b: videobooth_loss(m, b, 1), lambda micro: random_batch(dataset, 2))
    assert len(losses) == 2


def test_a_crafted_optimizer_file_is_refused(tmp_path, dataset, code_payload):
    cfg, ck = _checkpoint(tmp_path, dataset)
    payload, marker = code_payload
    torch.save({'optimizer': payload, 'scheduler': {}}, ck/'optimizer.pt')
    model = VideoBooth.toy(seed=0); model.set_stage(1)
    with pytest.raises(ValueError, match='refusing to load'):
        fit(TrainConfig(**{**cfg.__dict__, 'max_steps': 2}), model, lambda m, b: videobooth_loss(m, b, 1), lambda micro: random_batch(dataset, 2))
    assert not marker.exists()


def test_a_real_base_needs_frames_writes_outside_toy_and_fine_needs_an_adapter(tmp_path, dataset, monkeypatch):
    from vb_nb.model import write_tiny_pretrained
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path/'outputs'))
    parts = write_tiny_pretrained(tmp_path/'hub')
    real = ['--base', str(parts['base']), '--motion-adapter', str(parts['motion_adapter']), '--image-encoder', str(parts['image_encoder']),
            '--data', str(dataset.root), '--max-steps', '1', '--batch-size', '1', '--sample-steps', '0']
    with pytest.raises(SystemExit): main(['--stage', 'coarse'] + real)
    with pytest.raises(SystemExit): main(['--stage', 'fine', '--num-frames', '2'] + real)
    assert not (tmp_path/'outputs').exists()                      # refused before anything was written
    main(['--stage', 'coarse', '--num-frames', '2'] + real)
    assert (tmp_path/'outputs'/'coarse'/'final').is_dir() and not (tmp_path/'outputs'/'toy').exists()
    main(['--stage', 'fine', '--num-frames', '2', '--adapter', str(tmp_path/'outputs'/'coarse'/'final')] + real)
    main(['--stage', 'fine', '--num-frames', '2', '--from-scratch', '--out', str(tmp_path/'scratch')] + real)
    assert (tmp_path/'outputs'/'fine'/'final').is_dir() and (tmp_path/'scratch'/'final').is_dir()


# ---- the command line on a folder that is not a run, a NaN from a corrupt checkpoint, inputs out of range

def _cli(toy_inputs, out, *extra):
    return ['--stage', 'coarse', '--data', toy_inputs.data, '--vae', toy_inputs.vae, '--unet', toy_inputs.unet, '--out', str(out), '--max-steps', '1',
            '--batch-size', '2', '--num-frames', '2', '--sample-steps', '0', '--checkpoint-every', '1', '--text-dropout', '0', '--image-dropout', '0', *extra]


def test_cli_refuses_a_folder_that_is_not_a_run_and_changes_nothing(tmp_path, toy_inputs, capsys):
    (tmp_path/'final').mkdir(); (tmp_path/'final'/'thesis.tex').write_text('mine'); (tmp_path/'summary.json').write_text('mine')
    with pytest.raises(SystemExit) as e: main(_cli(toy_inputs, tmp_path))
    assert e.value.code == 2 and 'not a training run' in capsys.readouterr().err
    assert (tmp_path/'final'/'thesis.tex').read_text() == 'mine' and (tmp_path/'summary.json').read_text() == 'mine'
    assert sorted(os.listdir(tmp_path)) == ['final', 'summary.json'] and os.listdir(tmp_path/'final') == ['thesis.tex']


def test_cli_stops_with_a_non_zero_exit_when_a_corrupt_optimizer_state_makes_nan_weights(tmp_path, toy_inputs, capsys):
    main(_cli(toy_inputs, tmp_path))
    (ck,) = checkpoints(tmp_path)
    st = torch.load(ck/'optimizer.pt', weights_only=True)
    assert st['optimizer']['state']
    for s in st['optimizer']['state'].values(): s['exp_avg'].fill_(float('nan'))
    torch.save(st, ck/'optimizer.pt')
    final = (tmp_path/'final'/'diffusion_pytorch_model.safetensors').read_bytes()
    with pytest.raises(SystemExit) as e: main(_cli(toy_inputs, tmp_path, '--max-steps', '3'))
    assert e.value.code == 1 and 'NaN' in capsys.readouterr().err
    assert [p.name for p in checkpoints(tmp_path)] == ['step_0000001']                            # nothing NaN was saved
    assert (tmp_path/'final'/'diffusion_pytorch_model.safetensors').read_bytes() == final


def test_cli_names_too_many_frames_and_an_out_that_is_a_file_before_training(tmp_path, toy_inputs, capsys):
    with pytest.raises(SystemExit) as e: main(_cli(toy_inputs, tmp_path/'o', '--num-frames', '40'))
    assert e.value.code == 2 and '(32 frames)' in capsys.readouterr().err and not (tmp_path/'o').exists()
    (tmp_path/'file').write_text('mine')
    with pytest.raises(SystemExit) as e: main(_cli(toy_inputs, tmp_path/'file'))
    assert e.value.code == 2 and 'is a file' in capsys.readouterr().err and (tmp_path/'file').read_text() == 'mine'
