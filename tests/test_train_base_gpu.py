"benchmarks/train_base_gpu.py: its cached step is TextToVideo's step, and a short run writes a base and resumes."
import importlib.util, json, sys
from pathlib import Path
import pytest, torch

SCRIPT = Path(__file__).parents[1]/'benchmarks'/'train_base_gpu.py'


@pytest.fixture(scope='module')
def script():
    spec = importlib.util.spec_from_file_location('train_base_gpu', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # its clip renderer runs in worker processes, which find it by name
    spec.loader.exec_module(mod)
    return mod


def test_cached_step_is_the_base_step(script):
    from vb_nb.train import build_stage_model, StageInputs
    from vb_nb.sample import toy_model_dir
    torch.set_num_threads(1)
    base = build_stage_model('base', StageInputs(vae=str(toy_model_dir()/'vae')), noise_schedule='sd')
    clips, captions = script._render((0, 3))
    cached = script.CachedBase(base, *script.cache_frozen(base, clips, captions), text_dropout=0.0)
    pixels = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    torch.manual_seed(0); want = base(dict(pixel_values=pixels, caption=captions), 0.0)
    torch.manual_seed(0); got = cached(torch.arange(3))
    assert abs(got.item() - want.item()) < 2e-3 * want.item(), (got.item(), want.item())   # the cache holds fp16
    others = [(torch.manual_seed(s), cached(torch.arange(3)))[1].item() for s in range(1, 6)]
    assert max(abs(o - want.item()) for o in others) > 2e-3 * want.item()   # and the check can tell other draws apart


def test_short_run_writes_a_base_and_resumes(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path))
    args = ['--name', 'b', '--clips', '4', '--steps', '2', '--batch', '2', '--warmup', '1', '--checkpoint-every', '1', '--probe-clips', '1']
    script.main(args)                            # the library's step on the rendered frames
    out = capsys.readouterr().out
    assert 'b: 2 steps' in out and 'word probe' in out
    final = tmp_path/'toy'/'b'/'final'
    assert (final/'diffusion_pytorch_model.safetensors').exists() and (final/'text_encoder_layers.safetensors').exists()
    assert len(json.loads((tmp_path/'toy'/'b'/'summary.json').read_text())['losses']) == 2
    script.main(args[:5] + ['3'] + args[6:] + ['--cache'])     # --steps 3 with the cached step: goes on from the last checkpoint
    assert 'resuming from' in capsys.readouterr().out
    with pytest.raises(SystemExit): script.main(['--steps', '2'])
    with pytest.raises(SystemExit): script.main(['--probe', str(tmp_path/'nowhere')])
    assert 'not a base UNet folder' in capsys.readouterr().err


def test_motion_text_base_keeps_its_path(script, tmp_path, monkeypatch, capsys):
    from vb_nb.model import MOTION_TEXT_FILE
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path))
    script.main(['--name', 'm', '--clips', '4', '--steps', '1', '--batch', '2', '--warmup', '1', '--probe-clips', '1', '--motion-text', '--cache'])
    assert (tmp_path/'toy'/'m'/'final'/MOTION_TEXT_FILE).is_file()


def test_seconds_stops_at_a_checkpoint_and_the_same_command_goes_on(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path))
    args = ['--name', 's', '--clips', '4', '--steps', '3', '--batch', '2', '--warmup', '1', '--checkpoint-every', '1', '--probe-clips', '1', '--seconds', '0']
    script.main(args)                            # out of time at the first checkpoint
    out = capsys.readouterr().out
    assert 'stopped at step 1 of 3' in out and 'word probe' in out
    assert (tmp_path/'toy'/'s'/'final'/'diffusion_pytorch_model.safetensors').exists()
    assert len(json.loads((tmp_path/'toy'/'s'/'summary.json').read_text())['losses']) == 1
    script.main(args[:-1] + ['600'])             # the same run with time to finish
    out = capsys.readouterr().out
    assert 'resuming from' in out and 's: 3 steps' in out and 'stopped' not in out
    with pytest.raises(SystemExit): script.main(args[:-1] + ['-1'])
    assert '--seconds must be' in capsys.readouterr().err
