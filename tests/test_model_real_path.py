"The real loading path of vb_nb.model, exercised with tiny models of the real classes saved like SD 1.5 + AnimateDiff + CLIP vision."
import json

import numpy as np

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from transformers import CLIPTextModel, CLIPVisionModelWithProjection

from vb_nb.clip import load_tokenizer
from vb_nb.model import VideoBooth, load_unet, write_tiny_pretrained

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    return write_tiny_pretrained(tmp_path_factory.mktemp('pretrained'))


@pytest.fixture(scope='module')
def inputs():
    g = torch.Generator().manual_seed(0)
    return dict(noisy_latents=torch.randn(2, 4, 3, 16, 16, generator=g), timesteps=torch.tensor([50, 900]),
                prompts=['a red ball bounces', 'a green heart drifts up'], subjects=['ball', 'heart'],
                images=torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=g),
                image_noise=torch.randn(2, 4, 16, 16, generator=g))


@pytest.fixture(scope='module')
def model(folders):
    return VideoBooth.from_pretrained(folders['base'], motion_adapter=folders['motion_adapter'], image_encoder=folders['image_encoder']).eval()


def test_layout(folders):
    base = folders['base']
    for sub in ['unet', 'vae', 'text_encoder', 'scheduler']: assert (base/sub).is_dir(), sub
    assert (base/'tokenizer'/'tokenizer.json').exists() or (base/'tokenizer'/'vocab.json').exists()
    assert json.loads((base/'unet'/'config.json').read_text())['_class_name'] == 'UNet2DConditionModel'
    assert json.loads((folders['motion_adapter']/'config.json').read_text())['_class_name'] == 'MotionAdapter'


def test_weights_arrive_where_they_belong(folders, model):
    unet2d = UNet2DConditionModel.from_pretrained(folders['base']/'unet')
    motion = MotionAdapter.from_pretrained(folders['motion_adapter'])
    assert isinstance(model.unet, UNetMotionModel)
    torch.testing.assert_close(model.unet.conv_in.weight, unet2d.conv_in.weight)
    a = model.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    torch.testing.assert_close(a.to_q.weight, unet2d.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight)
    torch.testing.assert_close(a.processor.to_k.weight, a.to_k.weight)          # new frame K copies start from the base
    mm = model.unet.down_blocks[0].motion_modules[0].transformer_blocks[0].attn1.to_q.weight
    torch.testing.assert_close(mm, motion.down_blocks[0].motion_modules[0].transformer_blocks[0].attn1.to_q.weight)
    text = CLIPTextModel.from_pretrained(folders['base']/'text_encoder')
    torch.testing.assert_close(model.text_encoder.get_input_embeddings().weight, text.get_input_embeddings().weight)
    prompt = 'a striped orange star drifts to the left'
    assert model.tokenizer(prompt).input_ids == load_tokenizer()(prompt).input_ids      # the same BPE as the shipped tokenizer
    vision = CLIPVisionModelWithProjection.from_pretrained(folders['image_encoder'])
    torch.testing.assert_close(model.image_encoder.vision_model.embeddings.patch_embedding.weight, vision.vision_model.embeddings.patch_embedding.weight)
    assert model.noise_scheduler.config.beta_schedule == 'scaled_linear'
    assert not any(p.requires_grad for m in (model.unet, model.vae, model.text_encoder, model.image_encoder)
                   for n, p in m.named_parameters() if '.processor.' not in n)


def test_forward_and_adapter_round_trip(folders, model, inputs, tmp_path):
    with torch.no_grad():
        for p in model.adapter.parameters(): p.add_(0.05 * torch.randn_like(p))
        ref = model(**inputs)
    assert ref.shape == inputs['noisy_latents'].shape and ref.isfinite().all()
    model.save_adapter(tmp_path/'adapter')
    again = VideoBooth.from_pretrained(folders['base'], motion_adapter=folders['motion_adapter'],
                                       image_encoder=folders['image_encoder'], adapter=tmp_path/'adapter').eval()
    with torch.no_grad(): torch.testing.assert_close(again(**inputs), ref)


def test_joined_unet_folder_loads_directly(folders, tmp_path):
    joined = load_unet(folders['base'], motion_adapter=folders['motion_adapter'])
    joined.save_pretrained(tmp_path/'unet')          # e.g. the toy base the training notebook saves
    unet = load_unet(tmp_path)
    assert isinstance(unet, UNetMotionModel)
    for (n, p), (n2, p2) in zip(unet.state_dict().items(), joined.state_dict().items()):
        assert n == n2; torch.testing.assert_close(p, p2)
    with pytest.raises(ValueError, match='already holds a UNetMotionModel'): load_unet(tmp_path, motion_adapter=folders['motion_adapter'])


def test_errors_name_the_fix(folders, tmp_path):
    with pytest.raises(ValueError, match='name an AnimateDiff motion adapter'): VideoBooth.from_pretrained(folders['base'])
    with pytest.raises(FileNotFoundError, match='no such folder'): VideoBooth.from_pretrained(tmp_path/'missing', motion_adapter=folders['motion_adapter'])
    with pytest.raises((OSError, ValueError), match='image_encoder'):
        VideoBooth.from_pretrained(folders['base'], motion_adapter=folders['motion_adapter'])      # no image_encoder/ in base, none named
    with pytest.raises(OSError, match='offline|cache|cannot load'):
        VideoBooth.from_pretrained(folders['base'], motion_adapter='nobody/no-such-adapter', image_encoder=folders['image_encoder'])


def test_parts_from_elsewhere(folders, tmp_path):
    "A base folder without text_encoder/ and tokenizer/ (e.g. a toy base): the text tower is named, the tokenizer is the shipped one."
    import shutil
    base = tmp_path/'base'
    for sub in ['unet', 'vae', 'scheduler']: shutil.copytree(folders['base']/sub, base/sub)
    m = VideoBooth.from_pretrained(base, motion_adapter=folders['motion_adapter'], image_encoder=folders['image_encoder'],
                                   text_encoder=folders['base']/'text_encoder')
    prompt = 'a blue box slides down'
    assert m.tokenizer(prompt).input_ids == load_tokenizer()(prompt).input_ids
    text = CLIPTextModel.from_pretrained(folders['base']/'text_encoder')
    torch.testing.assert_close(m.text_encoder.get_input_embeddings().weight, text.get_input_embeddings().weight)


def test_a_base_saved_with_the_motion_text_path_loads_with_it(tmp_path, folders):
    import shutil
    from vb_nb.model import add_text_to_motion_modules, motion_text_processors, save_unet
    base = tmp_path/'base'
    shutil.copytree(folders['base'], base)
    unet = load_unet(folders['base'], folders['motion_adapter'])
    for p in add_text_to_motion_modules(unet): torch.nn.init.normal_(p.to_out.weight, std=0.1)   # as if trained
    shutil.rmtree(base/'unet')
    save_unet(unet, base/'unet')                      # a UNetMotionModel in unet/, its text path beside it
    model = VideoBooth.from_pretrained(base, image_encoder=folders['image_encoder'])
    saved, loaded = motion_text_processors(unet), motion_text_processors(model.unet)
    assert set(loaded) == set(saved) and len(saved) > 0
    assert all(torch.equal(loaded[n].to_out.weight, p.to_out.weight) for n, p in saved.items())


def test_a_saved_adapter_keeps_its_stage(folders, model, tmp_path):
    "A coarse-only adapter is sampled as coarse-only (the base's own frame attention) whichever way it is loaded."
    from vb_nb.sample import VideoBoothPipeline, load_model
    parts = dict(motion_adapter=folders['motion_adapter'], image_encoder=folders['image_encoder'])
    model.adapter.register_to_config(trained_stage='coarse')
    try: model.save_adapter(tmp_path/'coarse')
    finally: model.adapter.register_to_config(trained_stage=None)
    fresh = VideoBooth.from_pretrained(folders['base'], **parts)
    assert fresh.load_adapter(tmp_path/'coarse').adapter.config.trained_stage == 'coarse'
    assert VideoBooth.from_pretrained(folders['base'], **parts, adapter=tmp_path/'coarse').adapter.config.trained_stage == 'coarse'
    pipe = load_model(folders['base'], **parts, adapter=tmp_path/'coarse', device='cpu')
    assert pipe.trained_stage == 'coarse'
    kw = dict(num_frames=3, num_inference_steps=2, height=64, width=64)
    img = np.full((32, 32, 3), 200, np.uint8)
    run = lambda p, **o: p('a red ball bounces', image=img, subject='ball', guidance_scale=4.0, image_guidance_scale=2.0,
                           generator=torch.Generator().manual_seed(0), **kw, **o).frames
    same = VideoBoothPipeline.from_model(model)            # the same weights ...
    model.adapter.register_to_config(trained_stage='coarse')
    try: np.testing.assert_array_equal(run(pipe), run(same))    # ... sampled as the coarse adapter they are
    finally: model.adapter.register_to_config(trained_stage=None)
    assert (run(same) != run(pipe)).any()                  # sampled as fine they differ: the stage matters
    unet_calls = []
    h = pipe.unet.register_forward_pre_hook(lambda m, a, k: unet_calls.append(pipe.model.ctx.mode), with_kwargs=True)
    try: run(pipe)
    finally: h.remove()
    assert set(unet_calls) == {'stock'}                     # ... and the base's own frame attention in every branch


def test_bf16_sampling_at_real_class_size(folders):
    from vb_nb.sample import generate, load_model
    pipe = load_model(folders['base'], folders['motion_adapter'], folders['image_encoder'], device='cpu', dtype=torch.bfloat16)
    assert {p.dtype for p in pipe.model.parameters()} == {torch.bfloat16}
    seen = []
    h = pipe.model.unet.register_forward_pre_hook(lambda m, a, k: seen.append((a[0] if a else k['sample']).dtype), with_kwargs=True)
    try: v = generate(np.full((32, 32, 3), 200, np.uint8), 'a red ball bounces', model=pipe, num_frames=3, num_inference_steps=2, progress=False)
    finally: h.remove()
    assert v.frames.shape == (3, 64, 64, 3) and set(seen) == {torch.bfloat16}
