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
