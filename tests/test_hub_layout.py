"The hub downloads as they come (SD 1.5 layout, AnimateDiff motion adapter, CLIP vision) through generate, vb_nb_generate and vb_nb_assemble; the toy model through the same from_pretrained; sampling in bf16."
import os, subprocess, sys

import numpy as np
import pytest
import torch

from vb_nb.core import read_video
from vb_nb.model import write_tiny_pretrained
from vb_nb.sample import VideoBoothPipeline, assemble, generate, load_model

torch.set_num_threads(1)
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
IMG = np.full((40, 40, 3), 255, np.uint8); IMG[8:32, 8:32] = (30, 30, 200)
KW = dict(num_frames=3, num_inference_steps=2, progress=False)


def cli(module, *args):
    return subprocess.run([sys.executable, '-c', f'from vb_nb.sample import {module}; {module}()', *args],
                          capture_output=True, text=True, env=ENV, timeout=600)


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    "The three downloads, tiny, and a trained-looking adapter for them."
    root = tmp_path_factory.mktemp('hub')
    paths = write_tiny_pretrained(root)
    pipe = load_model(paths['base'], paths['motion_adapter'], paths['image_encoder'], device='cpu')
    with torch.no_grad():
        for p in pipe.model.adapter.parameters(): p.add_(0.05 * torch.randn_like(p))
    pipe.model.save_adapter(root/'adapter')
    return {**{k: str(v) for k, v in paths.items()}, 'adapter': str(root/'adapter')}


def test_generate_takes_the_downloads_as_they_come(hub):
    v = generate(IMG, 'a blue box slides down', model=hub['base'], motion_adapter=hub['motion_adapter'],
                 image_encoder=hub['image_encoder'], dtype='bf16', **KW)
    assert v.frames.shape == (3, 64, 64, 3) and v.frames.std() > 0
    with pytest.raises(ValueError, match='name an AnimateDiff motion adapter'): generate(IMG, 'a blue box slides down', model=hub['base'], **KW)
    with pytest.raises(ValueError, match='already ha'):
        generate(IMG, 'a ball rolls', motion_adapter=hub['motion_adapter'], **KW)          # the embedded toy model has its own
    with pytest.raises(ValueError, match='dtype must be one of'): generate(IMG, 'a ball rolls', dtype='int8', **KW)


def test_assemble_then_from_pretrained_gives_the_same_video(hub, tmp_path):
    parts = dict(motion_adapter=hub['motion_adapter'], image_encoder=hub['image_encoder'], adapter=hub['adapter'])
    r = cli('assemble_main', '--model', hub['base'], '--motion-adapter', parts['motion_adapter'], '--image-encoder', parts['image_encoder'],
            '--adapter', parts['adapter'], '--out', str(tmp_path/'videobooth'))
    assert r.returncode == 0, r.stderr
    one = VideoBoothPipeline.from_pretrained(tmp_path/'videobooth')
    direct = load_model(hub['base'], **parts, device='cpu')
    a = generate(IMG, 'a blue box slides down', model=one, **KW).frames
    b = generate(IMG, 'a blue box slides down', model=direct, **KW).frames
    assert np.abs(a.astype(int) - b).max() <= 1
    r = cli('main', '--model', str(tmp_path/'videobooth'), '--dtype', 'bf16', '--image', 'orange_dotted_ball', '--prompt', 'a ball rolls to the left',
            '--num-frames', '3', '--num-inference-steps', '2', '--refine', 'none', '--out', str(tmp_path/'one.mp4'))
    assert r.returncode == 0, r.stderr
    assert read_video(tmp_path/'one.mp4').shape == (3, 64, 64, 3)
    r = cli('assemble_main', '--motion-adapter', parts['motion_adapter'], '--out', str(tmp_path/'bad'))
    assert r.returncode == 2 and 'already holds its motion modules' in r.stderr and not (tmp_path/'bad').exists()
    (tmp_path/'notes').mkdir()
    r = cli('assemble_main', '--out', str(tmp_path/'notes'))
    assert r.returncode == 2 and 'not a pipeline folder' in r.stderr


def test_vb_nb_generate_takes_the_downloads(hub, tmp_path):
    out = tmp_path/'box.gif'
    r = cli('main', '--model', hub['base'], '--motion-adapter', hub['motion_adapter'], '--image-encoder', hub['image_encoder'],
            '--adapter', hub['adapter'], '--dtype', 'bf16', '--image', 'green_solid_box', '--prompt', 'a box drifts to the right',
            '--num-frames', '3', '--num-inference-steps', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert read_video(out).shape == (3, 64, 64, 3)
    r = cli('main', '--model', hub['base'], '--image', 'green_solid_box', '--prompt', 'a box drifts', '--out', str(tmp_path/'x.mp4'))
    assert r.returncode == 2 and 'motion adapter' in r.stderr


def test_the_toy_model_loads_through_the_same_from_pretrained(tmp_path):
    folder = assemble(tmp_path/'toy')
    pipe = VideoBoothPipeline.from_pretrained(folder)
    a = generate(IMG, 'a ball rolls to the left', model=pipe, refine=None, **KW).frames
    b = generate(IMG, 'a ball rolls to the left', model=load_model(device='cpu'), refine=None, **KW).frames
    assert np.abs(a.astype(int) - b).max() <= 1
    assert pipe.trained_stage == load_model(device='cpu').trained_stage


def test_the_toy_model_samples_in_bf16():
    pipe = load_model(device='cpu', dtype=torch.bfloat16)
    assert {p.dtype for p in pipe.model.parameters()} == {torch.bfloat16}    # the mapper too
    v = generate(IMG, 'a ball rolls to the left', model=pipe, **KW)
    w = generate(IMG, 'a ball rolls to the left', dtype=torch.bfloat16, **KW)
    assert v.frames.shape == (3, 64, 64, 3) and np.array_equal(v.frames, w.frames)
    with pytest.raises(ValueError, match='not torch.float32'): generate(IMG, 'a ball rolls', model=pipe, dtype='fp32', **KW)


def test_the_toy_adapter_keeps_its_stage(tmp_path):
    pipe = load_model(device='cpu')
    pipe.model.adapter.register_to_config(trained_stage='coarse')
    pipe.model.save_adapter(tmp_path/'coarse')
    assert load_model(adapter=tmp_path/'coarse', device='cpu').trained_stage == 'coarse'
