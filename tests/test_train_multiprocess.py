"Training on two processes (gloo on the CPU, started by torchrun): every stage's step runs, the processes keep the same weights (fit checks at each checkpoint)."
import json, os, signal, subprocess, sys
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file

TORCHRUN = Path(sys.executable).with_name('torchrun')


@pytest.mark.skipif(not TORCHRUN.exists(), reason='torchrun is not installed next to this python')
@pytest.mark.parametrize('stage', ['coarse', 'fine'])
def test_two_processes_train_a_stage(tmp_path, stage):
    from vb_nb.train import toy_training_data
    from vb_nb.sample import toy_model_dir
    data = toy_training_data(n_clips=4, root=tmp_path/'tw', progress=False)
    t = toy_model_dir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'VB_NB_OUTPUTS': str(tmp_path/'outputs')}
    cmd = [str(TORCHRUN), '--standalone', '--nproc_per_node', '2', '-m', 'vb_nb.train', '--stage', stage, '--data', str(data),
           '--vae', str(t/'vae'), '--unet', str(t/'unet'), '--adapter', str(t/'adapter'), '--out', str(tmp_path/'run'),
           '--max-steps', '2', '--batch-size', '1', '--num-frames', '2', '--checkpoint-every', '1', '--sample-steps', '0']
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try: out, err = p.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.communicate()      # torchrun and both of its workers
        raise
    assert p.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path/'run'/'summary.json').read_text())
    assert len(summary['losses']) == 2 and summary['processes'] == 2
    w = load_file(str(tmp_path/'run'/'final'/'diffusion_pytorch_model.safetensors'))
    assert all(torch.isfinite(v).all() for v in w.values())
    assert 'weights differ' not in err      # fit compares the processes' weights at every checkpoint
