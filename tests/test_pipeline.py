"VideoBoothPipeline as a diffusers pipeline: the call, batches, image inputs, outputs, save/load, dtypes, offload, devices, threads, and the processors kept."
import json, threading

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vb_nb.model import MOTION_TEXT_FILE, VideoBooth, add_text_to_motion_modules, build_unet, motion_text_processors
from vb_nb.sample import VideoBoothPipeline, VideoBoothPipelineOutput, as_uint8, generate

torch.set_num_threads(1)
IMG = np.full((48, 48, 3), 255, np.uint8); IMG[8:40, 8:40] = (200, 30, 30)
PROMPT = 'a red ball rolls to the left'
gen = lambda seed=0: torch.Generator().manual_seed(seed)


def sample(pipe, seed=0, prompt=PROMPT, **kw):
    "The frames of one call at a small size (`kw` overrides)."
    pipe.set_progress_bar_config(disable=True)
    kw = {'image': IMG, 'num_frames': 4, 'num_inference_steps': 2, 'generator': gen(seed), **kw}
    return pipe(prompt, **kw).frames


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
def toy():
    "The pipeline of a trained-looking random toy model (fine stage: image injection on)."
    return VideoBoothPipeline.from_model(trained_toy())


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    pipe = VideoBoothPipeline.from_model(trained_toy('coarse'))
    folder = pipe.save_pretrained(tmp_path_factory.mktemp('pipe')/'videobooth')
    return pipe, folder


def same_weights(a, b):
    for name in ('unet', 'vae', 'text_encoder', 'image_encoder', 'adapter'):
        x, y = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert set(x) == set(y), name
        assert all(torch.equal(x[k].float(), y[k].float()) for k in x), name


# ---- the call

def test_the_call_reads_like_diffusers():
    import inspect
    params = inspect.signature(VideoBoothPipeline.__call__).parameters
    first = ['self', 'prompt', 'image', 'subject', 'negative_prompt', 'num_frames', 'height', 'width', 'num_inference_steps', 'guidance_scale',
             'image_guidance_scale', 'num_videos_per_prompt', 'eta', 'generator', 'latents', 'prompt_embeds', 'negative_prompt_embeds',
             'output_type', 'return_dict', 'cross_attention_kwargs', 'callback_on_step_end', 'callback_on_step_end_tensor_inputs']
    assert list(params)[:len(first)] == first
    assert all(params[k].default is not inspect.Parameter.empty for k in first[1:])
    assert params['image_guidance_scale'].default is None and params['return_dict'].default is True and params['output_type'].default == 'np'
    for old in ('text_guidance', 'image_guidance', 'callback', 'steps'): assert old not in params
    assert set(VideoBoothPipeline._callback_tensor_inputs) == {'latents', 'prompt_embeds', 'negative_prompt_embeds'}


def test_output_types_and_return_dict(toy):
    frames = sample(toy)
    assert frames.shape == (1, 4, 64, 64, 3) and frames.dtype == np.float32 and 0 <= frames.min() <= frames.max() <= 1
    pil = sample(toy, output_type='pil')
    assert len(pil) == 1 and len(pil[0]) == 4 and np.array_equal(np.asarray(pil[0][0]), as_uint8(frames[0, 0]))
    pt = sample(toy, output_type='pt')
    assert pt.shape == (1, 4, 3, 64, 64) and torch.allclose(pt.permute(0, 1, 3, 4, 2), torch.from_numpy(frames), atol=1e-6)
    assert sample(toy, output_type='latent').shape == (1, 4, 4, 16, 16)
    out = toy(PROMPT, image=IMG, num_frames=4, num_inference_steps=2, generator=gen())
    assert isinstance(out, VideoBoothPipelineOutput) and np.array_equal(out.frames, frames)
    tup = toy(PROMPT, image=IMG, num_frames=4, num_inference_steps=2, generator=gen(), return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 1 and np.array_equal(tup[0], frames)
    with pytest.raises(ValueError, match='output_type'): sample(toy, output_type='gif')
    assert not np.array_equal(sample(toy, seed=1), frames)          # the generator decides the noise


def test_image_prompts_in_every_form(toy):
    ref = sample(toy)
    forms = [Image.fromarray(IMG), IMG.astype(np.float32) / 255, torch.from_numpy(IMG), torch.from_numpy(IMG).permute(2, 0, 1).float() / 255, [IMG]]
    for image in forms: assert np.abs(sample(toy, image=image) - ref).max() < 1e-5, type(image)
    with pytest.raises(ValueError, match='no image prompt'): sample(toy, image=None)
    with pytest.raises(ValueError, match='2 prompts but 3 image prompts'): sample(toy, prompt=[PROMPT] * 2, image=[IMG] * 3)


def test_a_batch_gives_the_videos_made_one_at_a_time(toy):
    prompts = [PROMPT, 'a star spins over the sand', 'a box moves up']
    images = [IMG, IMG[:, ::-1].copy(), np.full((32, 32, 3), (20, 200, 20), np.uint8)]
    for scales in (dict(), dict(image_guidance_scale=2.0)):              # two branches, and three
        batch = sample(toy, prompt=prompts, image=images, generator=[gen(s) for s in range(3)], **scales)
        assert batch.shape == (3, 4, 64, 64, 3)
        for i in range(3): assert np.abs(batch[i] - sample(toy, prompt=prompts[i], image=images[i], seed=i, **scales)[0]).max() < 1e-4
    one_image = sample(toy, prompt=prompts[:2], subject=['ball', 'star'], generator=[gen(0), gen(1)])
    assert np.abs(one_image[1] - sample(toy, prompt=prompts[1], seed=1)[0]).max() < 1e-4     # one image for every prompt
    with pytest.raises(ValueError, match='2 generators for 3 videos'): sample(toy, prompt=prompts, generator=[gen(0), gen(1)])


def test_num_videos_per_prompt(toy):
    frames = sample(toy, prompt=[PROMPT, 'a star spins'], num_videos_per_prompt=2, generator=[gen(s) for s in range(4)])
    assert frames.shape == (4, 4, 64, 64, 3)
    assert np.abs(frames[1] - sample(toy, seed=1)[0]).max() < 1e-4 and np.abs(frames[2] - sample(toy, prompt='a star spins', seed=2)[0]).max() < 1e-4
    assert not np.allclose(frames[0], frames[1])


def test_prompt_embeds_give_what_the_prompt_gives(toy):
    ref = sample(toy, negative_prompt='blurry')
    pe, npe = toy.encode_prompt(PROMPT, IMG, negative_prompt='blurry')
    assert pe.shape == npe.shape == (1, 77, 64)
    assert np.abs(sample(toy, prompt=None, prompt_embeds=pe, negative_prompt_embeds=npe) - ref).max() < 1e-5
    assert not np.allclose(ref, sample(toy))                            # the negative prompt counts
    with pytest.raises(ValueError, match='prompt or prompt_embeds'): sample(toy, prompt_embeds=pe)
    with pytest.raises(ValueError, match='needs the prompt itself'): sample(toy, prompt=None, prompt_embeds=pe, image_guidance_scale=2.0)


def test_callback_on_step_end_reads_and_replaces_the_latents(toy):
    seen = []
    def zero_last(pipe, i, t, tensors):
        seen.append(sorted(tensors))
        if i == pipe.num_timesteps - 1: tensors['latents'] = torch.zeros_like(tensors['latents'])
        return tensors
    out = sample(toy, output_type='latent', callback_on_step_end=zero_last, callback_on_step_end_tensor_inputs=VideoBoothPipeline._callback_tensor_inputs)
    assert out.abs().sum() == 0 and seen == [sorted(VideoBoothPipeline._callback_tensor_inputs)] * 2
    def more_guidance(pipe, i, t, tensors): pipe._guidance_scale += 1.0; return tensors
    sample(toy, guidance_scale=2.0, callback_on_step_end=more_guidance)
    assert toy.guidance_scale == 2.0 + toy.num_timesteps
    with pytest.raises(ValueError, match='may name'): sample(toy, callback_on_step_end=zero_last, callback_on_step_end_tensor_inputs=['noise'])


def test_guidance_scale_one_runs_one_branch(toy):
    rows = []
    h = toy.unet.register_forward_pre_hook(lambda m, a, k: rows.append((a[0] if a else k['sample']).shape[0]), with_kwargs=True)
    try:
        for scales in (dict(guidance_scale=1.0), dict(), dict(image_guidance_scale=2.0)): sample(toy, num_inference_steps=1, **scales)
    finally: h.remove()
    assert rows == [1, 1, 1, 2, 1, 3]                                    # per call: the image stream, then 1, 2 and 3 branches


# ---- save and load

def test_save_and_load_round_trip_the_whole_pipeline(saved):
    pipe, folder = saved
    index = json.loads((folder/'model_index.json').read_text())
    assert index['_class_name'] == 'VideoBoothPipeline' and index['adapter'] == ['vb_nb.model', 'VideoBoothAdapter']
    unet_keys = set(load_file(folder/'unet'/'diffusion_pytorch_model.safetensors'))
    assert unet_keys == set(build_unet('tiny').state_dict())          # a stock UNetMotionModel: diffusers alone loads it
    assert (folder/'unet'/MOTION_TEXT_FILE).is_file()
    again = VideoBoothPipeline.from_pretrained(folder)
    same_weights(pipe, again)
    assert len(motion_text_processors(again.unet)) == len(motion_text_processors(pipe.unet)) > 0
    assert again.trained_stage == 'coarse'
    assert again.feature_extractor.to_dict() == pipe.feature_extractor.to_dict()
    assert np.abs(sample(pipe) - sample(again)).max() < 1e-5


@pytest.mark.parametrize('form', [dict(safe_serialization=False), dict(variant='fp16'), dict(variant='fp16', safe_serialization=False)])
def test_save_and_load_in_each_form(toy, tmp_path, form):
    folder = toy.save_pretrained(tmp_path/'p', **form)
    ext = '.safetensors' if form.get('safe_serialization', True) else '.bin'
    name = f"diffusion_pytorch_model{'.' + form['variant'] if 'variant' in form else ''}{ext}"
    assert (folder/'adapter'/name).is_file() and (folder/'unet'/name).is_file()
    again = VideoBoothPipeline.from_pretrained(folder, **({'variant': form['variant']} if 'variant' in form else {}))
    same_weights(toy, again)
    assert np.abs(sample(toy) - sample(again)).max() < 1e-5
    if 'variant' not in form:
        with pytest.raises(ValueError, match='variant=fp16'): VideoBoothPipeline.from_pretrained(folder, variant='fp16')


def test_from_pretrained_in_bf16_and_with_a_dtype_dict(saved):
    pipe, folder = saved
    low = VideoBoothPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16)
    assert {p.dtype for p in low.model.parameters()} == {torch.bfloat16}
    frames = sample(low)
    assert frames.shape == (1, 4, 64, 64, 3) and np.abs(frames - sample(pipe)).mean() < 8 / 255
    mixed = VideoBoothPipeline.from_pretrained(folder, torch_dtype={'vae': torch.bfloat16, 'default': torch.float32})
    assert mixed.vae.dtype == torch.bfloat16 and mixed.unet.dtype == mixed.text_encoder.dtype == torch.float32
    assert np.abs(sample(mixed) - sample(pipe)).mean() < 8 / 255



@pytest.mark.parametrize('unet, adapter', [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_a_dtype_dict_gives_the_unet_and_the_adapter_their_own_dtypes(saved, unet, adapter):
    pipe, folder = saved
    mixed = VideoBoothPipeline.from_pretrained(folder, torch_dtype={'unet': unet, 'adapter': adapter, 'default': torch.float32})
    assert (mixed.unet.dtype, mixed.adapter.dtype, mixed.text_encoder.dtype, mixed.image_encoder.dtype, mixed.vae.dtype) == (unet, adapter, *[torch.float32] * 3)
    assert {p.dtype for p in mixed.adapter.mapper.parameters()} == {adapter}
    procs = [*mixed.adapter.text_kv.values(), *mixed.adapter.attn1.values()]        # they run inside the UNet's layers: the UNet's dtype
    assert {p.dtype for m in procs for p in m.parameters()} == {unet}
    a, b = mixed.adapter.state_dict(), pipe.adapter.state_dict()
    assert all(torch.equal(a[k].float(), b[k].float().to(a[k].dtype).float()) for k in b)   # each weight cast once, straight to its own dtype
    frames = sample(mixed)
    assert frames.shape == (1, 4, 64, 64, 3) and np.abs(frames - sample(pipe)).mean() < 8 / 255

def test_to_dtype_moves_every_part(saved):
    pipe, folder = saved
    again = VideoBoothPipeline.from_pretrained(folder).to(torch.bfloat16)
    assert {p.dtype for p in again.model.parameters()} == {torch.bfloat16}
    assert np.abs(sample(again) - sample(pipe)).mean() < 8 / 255


def test_saving_replaces_the_folder_only_when_complete(saved, tmp_path, monkeypatch):
    pipe, folder = saved
    out = pipe.save_pretrained(tmp_path/'p')
    before = sorted(p.relative_to(out) for p in out.rglob('*'))
    def broken(*a, **k): raise OSError('disk full')
    monkeypatch.setattr(type(pipe.adapter), 'save_pretrained', broken)
    with pytest.raises(OSError, match='disk full'): pipe.save_pretrained(out)
    assert sorted(p.relative_to(out) for p in out.rglob('*')) == before
    assert [p.name for p in tmp_path.iterdir()] == ['p']              # no half-written folder left beside it


# ---- memory, offload, devices

def test_vae_slicing_decodes_frame_by_frame(toy):
    calls = []
    h = toy.vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    try:
        whole = sample(toy)
        toy.enable_vae_slicing()
        sliced = sample(toy)
        toy.disable_vae_slicing(); sample(toy)
    finally: h.remove()
    assert calls == [4, 1, 1, 1, 1, 4]
    assert np.abs(whole - sliced).max() < 2e-3


def test_model_cpu_offload_installs_hooks_and_samples():
    pipe = VideoBoothPipeline.from_model(trained_toy())
    ref = sample(pipe)
    pipe.enable_model_cpu_offload(device='cpu')
    hooked = {type(h.model).__name__ for h in pipe._all_hooks}
    assert {'UNetMotionModel', 'AutoencoderKL', 'CLIPTextModel', 'CLIPVisionModelWithProjection'} <= hooked
    assert np.abs(sample(pipe) - ref).max() < 1e-5
    assert np.abs(sample(pipe) - ref).max() < 1e-5                       # twice: the hooks are put back after each call


def test_sequential_cpu_offload_can_be_enabled():
    "Enabling it used to fail at once (the adapter, kept out of the offload, shares its processors with the offloaded UNet). Sampling with it is checked on a GPU below: accelerate 1.15's hooks on a CPU execution device fail on torch 2.14 even for a bare nn.Linear."
    from vb_nb.model import _is_vb_nb
    pipe = VideoBoothPipeline.from_model(trained_toy())
    pipe.enable_sequential_cpu_offload(device='cpu')
    assert pipe.unet.conv_in.weight.device.type == 'meta'               # offloaded: loaded layer by layer as the call runs
    own = [m.processor for m in pipe.unet.modules() if hasattr(m, 'processor') and _is_vb_nb(m.processor)]
    assert own and all(p.device.type == 'cpu' for proc in own for p in proc.parameters(recurse=False))   # called directly: their own weights in place
    assert all(p.device.type == 'cpu' for p in [*pipe.adapter.mapper.parameters(), *pipe.text_encoder.parameters()])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cpu_generators_give_the_same_video_on_the_gpu(toy):
    ref = sample(toy)
    gpu = VideoBoothPipeline.from_model(trained_toy()).to('cuda')
    assert np.abs(sample(gpu) - ref).max() < 5e-3                         # the noise is drawn on the generator's device
    out = sample(gpu, generator=torch.Generator('cuda').manual_seed(0))
    assert out.shape == ref.shape
    gpu.to('cpu')
    off = VideoBoothPipeline.from_model(trained_toy())
    off.enable_model_cpu_offload(device='cuda')
    assert np.abs(sample(off) - ref).max() < 5e-3
    seq = VideoBoothPipeline.from_model(trained_toy())
    seq.enable_sequential_cpu_offload(device='cuda')
    for _ in range(2): assert np.abs(sample(seq) - ref).max() < 5e-3


def test_processors_are_never_silently_replaced():
    pipe = VideoBoothPipeline.from_model(trained_toy())
    ref = sample(pipe)
    before = {n: m.processor for n, m in pipe.unet.named_modules() if hasattr(m, 'set_processor')}
    with pytest.raises(RuntimeError, match='enable_vae_slicing'): pipe.enable_attention_slicing()
    with pytest.raises(RuntimeError, match='xformers'): pipe.enable_xformers_memory_efficient_attention()
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    with pytest.raises(RuntimeError, match='holds trained weights'): pipe.unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match='holds trained weights'): pipe.unet.fuse_qkv_projections()
    pipe.unet.set_default_attn_processor()                               # the method's own processors stay; the stock ones get diffusers' plain one
    after = {n: m.processor for n, m in pipe.unet.named_modules() if hasattr(m, 'set_processor')}
    custom = [n for n, p in before.items() if not type(p).__module__.startswith('diffusers.')]
    assert len(custom) > 8 and all(after[n] is before[n] for n in custom)
    assert all(isinstance(p, AttnProcessor) for n, p in after.items() if n not in custom)
    assert np.abs(sample(pipe) - ref).max() < 1e-4


# ---- threads

def test_two_threads_sampling_with_one_model_do_not_mix():
    "Two callers of generate on one model (two demo apps, or two threads on the cached default model) each get their own video."
    model = VideoBooth.toy(seed=0).eval()
    jobs = {'three frames': dict(num_frames=3, seed=1), 'one frame': dict(num_frames=1, seed=2)}
    run = lambda kw: generate(IMG, PROMPT, model=model, num_inference_steps=4, progress=False, refine=None, **kw).frames
    alone = {k: run(kw) for k, kw in jobs.items()}
    results, errors = {k: [] for k in jobs}, []
    def worker(k):
        try:
            for _ in range(3): results[k].append(run(jobs[k]))
        except Exception as e: errors.append(e)
    threads = [threading.Thread(target=worker, args=(k,)) for k in jobs]
    for t in threads: t.start()
    for t in threads: t.join(300)
    assert not errors, errors
    for k in jobs: assert len(results[k]) == 3 and all(np.array_equal(r, alone[k]) for r in results[k]), k
