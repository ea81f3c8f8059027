"VideoBoothPipeline as a diffusers pipeline: whole-pipeline save/load, dtypes, memory savers, output types, and the processors kept."
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vb_nb.model import MOTION_TEXT_FILE, VideoBooth, add_text_to_motion_modules, build_unet, motion_text_processors
from vb_nb.sample import VideoBoothPipeline, VideoBoothPipelineOutput

torch.set_num_threads(1)
IMG = np.full((48, 48, 3), 255, np.uint8); IMG[8:40, 8:40] = (200, 30, 30)


def sample(pipe, seed=0, **kw):
    pipe.set_progress_bar_config(disable=True)
    return pipe(IMG, 'a red ball rolls to the left', 'ball', num_frames=4, num_inference_steps=2, generator=torch.Generator().manual_seed(seed), **kw)


def trained_toy(stage=None):
    "A random toy model with a motion-text path and an adapter that is no longer at its start, as if trained."
    torch.manual_seed(0)
    unet = build_unet('tiny', seed=0)
    for p in add_text_to_motion_modules(unet): torch.nn.init.normal_(p.to_out.weight, std=0.05)
    toy = VideoBooth.toy(seed=0)
    model = VideoBooth(unet, toy.vae, toy.text_encoder, toy.tokenizer, toy.image_encoder, toy.noise_scheduler).eval()
    with torch.no_grad():
        for p in model.adapter.parameters(): p.add_(0.05 * torch.randn_like(p))
    if stage: model.adapter.register_to_config(trained_stage=stage)
    return model


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    pipe = VideoBoothPipeline.from_model(trained_toy('coarse'))
    folder = pipe.save_pretrained(tmp_path_factory.mktemp('pipe')/'videobooth')
    return pipe, folder


def test_components_are_registered():
    pipe = VideoBoothPipeline.from_model(VideoBooth.toy(seed=0))
    assert set(pipe.components) == {'unet', 'vae', 'text_encoder', 'tokenizer', 'image_encoder', 'feature_extractor', 'adapter', 'scheduler'}
    assert pipe.adapter.mapper is pipe.model.adapter.mapper and pipe.unet is pipe.model.unet
    again = VideoBoothPipeline(**pipe.components)          # the parts of a built model find that model again
    assert again.model is pipe.model
    import copy
    copied = copy.deepcopy(pipe.model)
    assert VideoBoothPipeline.from_model(copied).model is copied     # a copy's parts belong to the copy (the benchmark copies models)


def test_save_and_load_round_trip_the_whole_pipeline(saved):
    pipe, folder = saved
    index = json.loads((folder/'model_index.json').read_text())
    assert index['_class_name'] == 'VideoBoothPipeline' and index['adapter'] == ['vb_nb.model', 'VideoBoothAdapter']
    unet_keys = set(load_file(folder/'unet'/'diffusion_pytorch_model.safetensors'))
    assert unet_keys == set(build_unet('tiny').state_dict())          # a stock UNetMotionModel: diffusers alone loads it
    assert (folder/'unet'/MOTION_TEXT_FILE).is_file()
    again = VideoBoothPipeline.from_pretrained(folder)
    for name in ('unet', 'vae', 'text_encoder', 'image_encoder', 'adapter'):
        a, b = getattr(pipe, name).state_dict(), getattr(again, name).state_dict()
        assert set(a) == set(b), name
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert len(motion_text_processors(again.unet)) == len(motion_text_processors(pipe.unet)) > 0
    assert again.trained_stage == 'coarse'
    assert again.feature_extractor.to_dict() == pipe.feature_extractor.to_dict()
    a, b = sample(pipe).astype(int), sample(again).astype(int)
    assert np.abs(a - b).max() <= 1                                    # equal weights: the same video up to rounding


def test_from_pretrained_in_bf16(saved):
    pipe, folder = saved
    low = VideoBoothPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    frames = sample(low)
    assert frames.shape == (4, 64, 64, 3) and np.abs(frames.astype(int) - sample(pipe)).mean() < 8


def test_saving_replaces_the_folder_only_when_complete(saved, tmp_path, monkeypatch):
    pipe, folder = saved
    out = pipe.save_pretrained(tmp_path/'p')
    before = sorted(p.relative_to(out) for p in out.rglob('*'))
    def broken(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(type(pipe.adapter), 'save_pretrained', broken)
    with pytest.raises(OSError, match='disk full'): pipe.save_pretrained(out)
    assert sorted(p.relative_to(out) for p in out.rglob('*')) == before
    assert [p.name for p in tmp_path.iterdir()] == ['p']              # no half-written folder left beside it


def test_output_types_and_return_dict():
    pipe = VideoBoothPipeline.from_model(VideoBooth.toy(seed=0).eval())
    frames = sample(pipe)
    assert frames.dtype == np.uint8 and frames.shape == (4, 64, 64, 3)
    pil = sample(pipe, output_type='pil')
    assert len(pil) == 4 and np.array_equal(np.asarray(pil[0]), frames[0])
    pt = sample(pipe, output_type='pt')
    assert pt.shape == (4, 3, 64, 64) and 0 <= pt.min() and pt.max() <= 1
    assert np.abs(pt.permute(0, 2, 3, 1).numpy() * 255 - frames).max() <= 0.5 + 1e-3
    assert sample(pipe, output_type='latent').shape == (1, 4, 4, 16, 16)
    out = sample(pipe, return_dict=True)
    assert isinstance(out, VideoBoothPipelineOutput) and np.array_equal(out.frames, frames)
    with pytest.raises(ValueError, match='output_type'): sample(pipe, output_type='gif')
    assert not np.array_equal(sample(pipe, seed=1), frames)          # the generator decides the noise


def test_vae_slicing_decodes_frame_by_frame():
    pipe = VideoBoothPipeline.from_model(VideoBooth.toy(seed=0).eval())
    calls = []
    pipe.vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    whole = sample(pipe)
    pipe.enable_vae_slicing()
    sliced = sample(pipe)
    assert calls == [4, 1, 1, 1, 1]
    assert np.abs(whole.astype(int) - sliced).max() <= 1
    pipe.disable_vae_slicing(); calls.clear(); sample(pipe)
    assert calls == [4]


def test_model_cpu_offload_installs_hooks_and_samples():
    pipe = VideoBoothPipeline.from_model(VideoBooth.toy(seed=0).eval())
    ref = sample(pipe)
    try: pipe.enable_model_cpu_offload(device='cpu')
    except RuntimeError as e: pytest.skip(f"accelerate's offload needs an accelerator here: {e}")
    hooked = {type(h.model).__name__ for h in pipe._all_hooks}
    assert {'UNetMotionModel', 'AutoencoderKL', 'CLIPTextModel', 'CLIPVisionModelWithProjection'} <= hooked
    assert np.abs(sample(pipe).astype(int) - ref).max() <= 1


def test_processors_are_never_silently_replaced():
    model = trained_toy()
    pipe = VideoBoothPipeline.from_model(model)
    ref = sample(pipe)
    before = {n: m.processor for n, m in pipe.unet.named_modules() if hasattr(m, 'set_processor')}
    with pytest.raises(RuntimeError, match='enable_vae_slicing'): pipe.enable_attention_slicing()
    with pytest.raises(RuntimeError, match='xformers'): pipe.enable_xformers_memory_efficient_attention()
    with pytest.raises((RuntimeError, ValueError)): pipe.unet.set_default_attn_processor()
    from diffusers.models.attention_processor import AttnProcessor2_0
    with pytest.raises(RuntimeError, match='holds trained weights'): pipe.unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match='holds trained weights'): pipe.unet.fuse_qkv_projections()
    after = {n: m.processor for n, m in pipe.unet.named_modules() if hasattr(m, 'set_processor')}
    custom = [n for n, p in before.items() if not type(p).__module__.startswith('diffusers.')]
    assert len(custom) > 8 and all(after[n] is before[n] for n in custom)
    assert np.abs(sample(pipe).astype(int) - ref).max() <= 1
