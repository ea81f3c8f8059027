"benchmarks/bench_real_gpu.py: its --tiny mode runs every measurement on the CPU and writes the results file."
import importlib.util, json, sys
from pathlib import Path
import torch

SCRIPT = Path(__file__).parents[1]/'benchmarks'/'bench_real_gpu.py'


def test_tiny_mode_measures_everything(tmp_path):
    spec = importlib.util.spec_from_file_location('bench_real_gpu', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    mod.main(['--tiny', '--out', str(tmp_path/'r.json')])
    r = json.loads((tmp_path/'r.json').read_text())
    assert r['tiny'] and [t['batch'] for t in r['training']] == [1, 2]
    assert all('error' not in t and len(t['step_s']) == 2 for t in r['training']), r['training']
    assert all('error' not in s and s['seconds'] > 0 for s in r['sampling'].values()), r['sampling']
    assert r['params_millions']['trained_stage2'] > 0
    real = mod.configs(tiny=False)                # the full run's parts are the published ones
    assert real['unet']['block_out_channels'] == (320, 640, 1280, 1280) and real['vision']['hidden_size'] == 1024


def test_real_configs_build_the_published_models():
    "The full run's parts, built on the meta device (no memory, no weights): SD 1.5 + AnimateDiff v1-5-2 + CLIP ViT-L/14 sizes, and the stages' trained sets."
    spec = importlib.util.spec_from_file_location('bench_real_gpu', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    with torch.device('meta'):
        parts = mod.build_parts(mod.configs(tiny=False))
        sizes = {k: mod.millions(parts[k]) for k in ('unet', 'vae', 'text_encoder', 'image_encoder')}
        model = mod.videobooth(parts)
    assert sizes == dict(unet=round(859.5 + 453.2, 1), vae=83.7, text_encoder=123.1, image_encoder=304.0), sizes   # 2D UNet + motion modules
    assert [round(sum(p.numel() for p in model.set_stage(s)) / 1e6, 1) for s in (1, 2)] == [48.1, 97.7]
