"""The chain cells at test size, end to end: every stage, the ship, and a video from what was shipped.
08's cells train the embedded model; 08b's trained the image-first model of its study."""
import json, re, shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def cells(notebook: str, ids: list) -> str:
    "The joined sources of a notebook's cells `ids`, in that order."
    nb = json.loads((ROOT/'nbs'/notebook).read_text())
    src = {c.get('id'): ''.join(c['source']) for c in nb['cells']}
    return '\n'.join(src[i] for i in ids)


CHAINS = {'08_train.ipynb': (['chainrun', 'chainrn2', 'chainrn3'], ['vae', 'decoder', 'image', 'motion', 'path', 'coarse', 'fine']),
          '08b_cpu_gate.ipynb': (['chainrun'], ['vae', 'decoder', 'image', 'motion', 'coarse', 'fine'])}
SHIPS = {'08_train.ipynb': 'ship_toy_model(times=times)', '08b_cpu_gate.ipynb': "ship_toy_model(toy/'image_first', "}


@pytest.mark.parametrize('notebook', list(CHAINS))
def test_chain_cells_name_every_step(notebook):
    ids, runs = CHAINS[notebook]
    src = cells(notebook, ids)
    assert all(cells(notebook, [i]).startswith('#| slow') for i in ids)
    steps = re.search(r"steps = dict\(([^)]*)\)", src).group(1)
    assert [k.split('=')[0].strip() for k in steps.split(',')] == runs
    assert src.count(SHIPS[notebook]) == 1


def _shrunk(src: str, runs: list) -> str:
    src = re.sub(r"steps = dict\([^)]*\)", 'steps = dict(' + ', '.join(f'{r}=2' for r in runs) + ')', src)
    return re.sub(r"clips = dict\(([^)]*)\)", lambda m: 'clips = dict(' + ', '.join(f"{k.split('=')[0].strip()}=8" for k in m.group(1).split(',')) + ')', src)


@pytest.mark.parametrize('notebook', list(CHAINS))
def test_chain_cells_run_at_test_size(notebook, tmp_path, monkeypatch):
    import torch, vb_nb.train
    from vb_nb.clip import TEXT_LAYERS_FILE
    from vb_nb.sample import toy_model_dir, load_model, generate, example_images
    from vb_nb.train import CHAIN_TIMES
    monkeypatch.setenv('VB_NB_OUTPUTS', str(tmp_path/'outputs')); monkeypatch.setenv('VB_NB_DATA', str(tmp_path/'data'))
    layers = tmp_path/'outputs'/'toy'/'text_layers'/TEXT_LAYERS_FILE          # step 1 (minutes of CLIP training) taken as shipped
    layers.parent.mkdir(parents=True); shutil.copyfile(toy_model_dir()/'unet'/TEXT_LAYERS_FILE, layers)
    ids, runs = CHAINS[notebook]
    src, dest = _shrunk(cells(notebook, ids), runs), tmp_path/'shipped'
    src = src.replace(SHIPS[notebook], SHIPS[notebook].replace('ship_toy_model(', f'ship_toy_model({str(dest)!r}, ').replace("toy/'image_first', ", ''))
    torch.manual_seed(0)
    exec(compile(src, notebook, 'exec'), dict(vars(vb_nb.train)))       # the notebook's names: vb_nb.train's
    log = json.loads((dest/'train_log.json').read_text())
    assert list(log) == runs and all(d['steps'] == 2 for d in log.values())
    if notebook == '08_train.ipynb':
        times = json.loads((dest/CHAIN_TIMES).read_text())['seconds']
        assert list(times) == ['text_layers', *runs] and all(s >= 0 for s in times.values())
    assert str(tmp_path) not in ''.join(p.read_text() for p in dest.rglob('*.json'))    # shipped without this machine's paths
    pipe = load_model(dest)
    video = generate(example_images()['green_solid_box'], 'a box drifts to the right', model=pipe, num_inference_steps=2,
                     num_frames=4, refine=None, progress=False)
    assert video.frames.shape == (4, 64, 64, 3) and np.isfinite(video.frames).all()
