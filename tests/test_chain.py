"""08b's chain cell, the one that trains the image-first model, run end to end at test size: every stage, the ship, and a video from what it shipped."""
import json, re, shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def chain_cell() -> str:
    "The source of 08b_cpu_gate's chain cell (id 'chainrun')."
    nb = json.loads((ROOT/'nbs'/'08b_cpu_gate.ipynb').read_text())
    return ''.join(next(c for c in nb['cells'] if c.get('id') == 'chainrun')['source'])


def test_chain_cell_names_every_step():
    src = chain_cell()
    assert src.startswith('#| slow')
    steps = re.search(r"steps = dict\(([^)]*)\)", src).group(1)
    assert [k.split('=')[0].strip() for k in steps.split(',')] == ['vae', 'decoder', 'image', 'motion', 'coarse', 'fine']
    assert 'ship_toy_model(' in src


def test_chain_cell_runs_at_test_size(tmp_path, monkeypatch):
    import torch
    from vb_nb.clip import TEXT_LAYERS_FILE
    from vb_nb.sample import toy_model_dir, load_model, generate, example_images
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path/'outputs')); monkeypatch.setenv('VB_NB_DATA', str(tmp_path/'data'))
    layers = tmp_path/'outputs'/'toy'/'text_layers'/TEXT_LAYERS_FILE          # step 1 (minutes of CLIP training) taken as shipped
    layers.parent.mkdir(parents=True); shutil.copyfile(toy_model_dir()/'unet'/TEXT_LAYERS_FILE, layers)
    src = re.sub(r"steps = dict\([^)]*\)", "steps = dict(vae=2, decoder=2, image=2, motion=2, coarse=2, fine=2)", chain_cell())
    src = re.sub(r"clips = dict\([^)]*\)", "clips = dict(decoder=4, image=8, clips=8)", src)
    dest = tmp_path/'shipped'
    assert src.count("ship_toy_model(toy/'image_first', vae_run=") == 1
    src = src.replace("ship_toy_model(toy/'image_first', vae_run=", f'ship_toy_model({str(dest)!r}, vae_run=')
    torch.manual_seed(0)
    exec(compile(src, 'chain_cell', 'exec'), {})
    log = json.loads((dest/'train_log.json').read_text())
    assert list(log) == ['vae', 'decoder', 'image', 'motion', 'coarse', 'fine'] and all(d['steps'] == 2 for d in log.values())
    assert str(tmp_path) not in ''.join(p.read_text() for p in dest.rglob('*.json'))    # shipped without this machine's paths
    pipe = load_model(dest)
    video = generate(example_images()['green_solid_box'], 'a box drifts to the right', model=pipe, num_inference_steps=2,
                     num_frames=4, refine=None, progress=False)
    assert video.frames.shape == (4, 64, 64, 3) and np.isfinite(video.frames).all()
