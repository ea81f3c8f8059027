"""Real-scale figures on one GPU, from the real configs with random weights (nothing is downloaded).

The parts are built from their published configs: Stable Diffusion 1.5's UNet, VAE and text encoder (CLIP ViT-L/14's
text tower), the AnimateDiff v1-5-2 motion adapter, and CLIP ViT-L/14's vision tower. Random weights are enough for
memory and speed: a step costs the same whatever the weights hold.

  * training memory: peak GPU memory of one fine-stage training step (the library's loss, trainable set, frozen weights
    stored in bf16, bf16 autocast, gradient checkpointing), 16 frames of 256 x 256, at batch 1 and 2 (goal: <= 20 GiB at 1);
  * sampling speed: a 16 x 256 x 256 video in 25 steps in bf16, VideoBooth's sampler against diffusers' stock
    AnimateDiffPipeline on the same UNet weights, in the same run.

    python benchmarks/bench_real_gpu.py            # on the GPU: writes benchmarks/results/real_gpu/gpu.json
    python benchmarks/bench_real_gpu.py --tiny     # the same code at tiny size on the CPU (well under a minute)
"""
import argparse, contextlib, copy, json, platform, sys, time, traceback
from pathlib import Path

import torch

RESULTS = Path(__file__).parent/'results'/'real_gpu'
GOAL_GIB = 20.0

# ---- the published configs (diffusers / transformers argument names)
SD15_UNET = dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',), up_block_types=('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3,
                 sample_size=64, norm_num_groups=32)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
                layers_per_block=2, latent_channels=4, sample_size=512, scaling_factor=0.18215)
ANIMATEDIFF_V152 = dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_mid_block_layers_per_block=1,
                        motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
CLIP_L14_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768,
                     max_position_embeddings=77, hidden_act='quick_gelu')
CLIP_L14_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, patch_size=14,
                       image_size=224, projection_dim=768, hidden_act='quick_gelu')


def configs(tiny: bool) -> dict:
    "The real configs, or the tiny versions of the same classes (the tests' write_tiny_pretrained sizes)."
    if not tiny: return dict(unet=SD15_UNET, vae=SD15_VAE, motion=ANIMATEDIFF_V152, text=CLIP_L14_TEXT, vision=CLIP_L14_VISION)
    from vb_nb.model import UNET_CONFIGS, TOY_VAE_CONFIG
    from vb_nb.clip import toy_clip_config
    u, clip = UNET_CONFIGS['tiny'], toy_clip_config()
    return dict(unet=dict(block_out_channels=u['block_out_channels'], layers_per_block=u['layers_per_block'], cross_attention_dim=u['cross_attention_dim'],
                          attention_head_dim=u['num_attention_heads'], down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                          up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), sample_size=16, norm_num_groups=u['norm_num_groups']),
                vae=dict(TOY_VAE_CONFIG), motion=dict(block_out_channels=u['block_out_channels'], motion_layers_per_block=u['layers_per_block'],
                                                      motion_num_attention_heads=u['motion_num_attention_heads'], motion_norm_num_groups=u['norm_num_groups'],
                                                      motion_max_seq_length=u['motion_max_seq_length']),
                text=clip.text_config.to_dict(), vision=clip.vision_config.to_dict())


def build_parts(cfg: dict, seed: int = 0) -> dict:
    "Random-weight parts: the UNet with its motion modules (twice, same weights: one for VideoBooth, one stock), VAE, text and vision towers."
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection
    from vb_nb.model import _quiet_diffusers
    torch.manual_seed(seed)
    with _quiet_diffusers():
        unet = UNetMotionModel.from_unet2d(UNet2DConditionModel(**cfg['unet']), MotionAdapter(**cfg['motion']))
    return dict(unet=unet, stock_unet=copy.deepcopy(unet), vae=AutoencoderKL(**cfg['vae']),
                text_encoder=CLIPTextModel(CLIPTextConfig(**cfg['text'])), image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg['vision'])))


def videobooth(parts: dict):
    from vb_nb.model import VideoBooth, sd_noise_scheduler
    from vb_nb.clip import load_tokenizer
    return VideoBooth(parts['unet'], parts['vae'], parts['text_encoder'], load_tokenizer(), parts['image_encoder'], sd_noise_scheduler())


def millions(module) -> float: return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def peak_reset(device):
    if device.type == 'cuda': torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

def peak_gib(device):
    if device.type != 'cuda': return None
    torch.cuda.synchronize(); return round(torch.cuda.max_memory_allocated() / 2**30, 2)

def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def training_step(model, batch_size: int, frames: int, size: int, device, steps: int = 2) -> dict:
    "Peak memory and time of fine-stage training steps as train_stage runs them (the first step also allocates AdamW's state)."
    from vb_nb.train import videobooth_loss
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    batch = dict(pixel_values=torch.rand(batch_size, frames, 3, size, size, generator=g) * 2 - 1,
                 vae_pixel_values=torch.rand(batch_size, 3, size, size, generator=g) * 2 - 1,
                 clip_images=torch.rand(batch_size, 3, 224, 224, generator=g),
                 caption=['a red star drifts to the left over green grass'] * batch_size, subject=['star'] * batch_size)
    peak_reset(device); times = []
    for _ in range(steps):
        t = time.time()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = videobooth_loss(model, batch, 2, text_dropout=0.0, image_dropout=0.0)   # every clip injected: the stage's usual call
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        sync(device); times.append(time.time() - t)
    return dict(batch=batch_size, peak_gib=peak_gib(device), step_s=[round(x, 3) for x in times], loss=round(loss.item(), 4))


def time_videobooth(model, frames, size, steps, device) -> dict:
    from vb_nb.sample import generate
    image = (torch.rand(size, size, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8).numpy()
    run = lambda n: generate(image, 'a red star drifts to the left over green grass', 'star', model=model, num_frames=frames, height=size, width=size,
                             num_inference_steps=n, refine=None, progress=False, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        run(1); sync(device); peak_reset(device)                     # warm-up: kernels, caches
        t = time.time(); run(steps); sync(device)
    return dict(seconds=round(time.time() - t, 3), peak_gib=peak_gib(device))


def time_stock(parts, frames, size, steps, device) -> dict:
    from diffusers import AnimateDiffPipeline, DDIMScheduler
    from vb_nb.clip import load_tokenizer
    from vb_nb.model import sd_noise_scheduler
    pipe = AnimateDiffPipeline(vae=parts['vae'], text_encoder=parts['text_encoder'], tokenizer=load_tokenizer(), unet=parts['stock_unet'], motion_adapter=None,
                               scheduler=DDIMScheduler.from_config(sd_noise_scheduler().config, clip_sample=False, set_alpha_to_one=False))
    pipe.set_progress_bar_config(disable=True)
    run = lambda n: pipe('a red star drifts to the left over green grass', num_frames=frames, height=size, width=size, num_inference_steps=n,
                         guidance_scale=7.5, output_type='np', generator=torch.Generator(device).manual_seed(0))
    run(1); sync(device); peak_reset(device)
    t = time.time(); run(steps); sync(device)
    return dict(seconds=round(time.time() - t, 3), peak_gib=peak_gib(device))


def attempt(fn, *args) -> dict:
    "fn's figures, or what stopped it (out of memory, an error) so the other figures still get written."
    try: return fn(*args)
    except torch.cuda.OutOfMemoryError as e: return dict(error='out of memory', detail=str(e)[:300])
    except Exception as e: return dict(error=f"{type(e).__name__}: {e}"[:500], where=traceback.format_exc(limit=3)[-800:])
    finally:
        if torch.cuda.is_available(): torch.cuda.empty_cache()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--tiny', action='store_true', help='tiny parts of the same classes on the CPU: checks the script, measures nothing real')
    ap.add_argument('--out', default=None, help=f'results file (default {RESULTS}/gpu.json, or tiny_cpu.json with --tiny)')
    ap.add_argument('--frames', type=int, default=None); ap.add_argument('--size', type=int, default=None)
    ap.add_argument('--steps', type=int, default=None, help='sampling steps (default 25; 2 with --tiny)')
    ap.add_argument('--batches', default='1,2', help='training batch sizes to measure')
    a = ap.parse_args(argv)
    frames, size, steps = a.frames or (4 if a.tiny else 16), a.size or (32 if a.tiny else 256), a.steps or (2 if a.tiny else 25)
    device = torch.device('cpu' if a.tiny or not torch.cuda.is_available() else 'cuda')
    if not a.tiny and device.type != 'cuda': ap.error('no GPU here: run with --tiny to check the script on the CPU')
    if device.type == 'cuda': torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = Path(a.out or RESULTS/('tiny_cpu.json' if a.tiny else 'gpu.json'))
    from vb_nb.train import enable_checkpointing, store_frozen_in, hardware
    import diffusers, transformers
    t0 = time.time()
    parts = build_parts(configs(a.tiny))
    model = videobooth(parts)
    sizes = dict(unet=millions(parts['unet']), vae=millions(parts['vae']), text_encoder=millions(parts['text_encoder']),
                 image_encoder=millions(parts['image_encoder']), adapter=millions(model.adapter))
    model.set_stage(2)
    sizes['trained_stage2'] = round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 1)
    enable_checkpointing(model); store_frozen_in(model, torch.bfloat16, keep=(model.adapter,))   # as train_stage does: the adapter saves in fp32
    model.to(device).train()
    train = [attempt(training_step, model, int(b), frames, size, device) for b in a.batches.split(',')]
    model.requires_grad_(False).eval(); model.to(torch.bfloat16)
    sample = dict(videobooth=attempt(time_videobooth, model, frames, size, steps, device))
    parts['stock_unet'].to(device, torch.bfloat16)
    sample['stock_animatediff'] = attempt(time_stock, parts, frames, size, steps, device)
    b1 = next((r for r in train if r.get('batch') == 1), {})
    result = dict(tiny=a.tiny, device=hardware(), torch=torch.__version__, diffusers=diffusers.__version__, transformers=transformers.__version__,
                  python=platform.python_version(), frames=frames, size=size, sampling_steps=steps, params_millions=sizes,
                  training=train, training_goal_gib=GOAL_GIB,
                  training_goal_met=(b1['peak_gib'] <= GOAL_GIB) if b1.get('peak_gib') is not None else None,
                  sampling=sample, seconds=round(time.time() - t0, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    from vb_nb.core import atomic_path
    with atomic_path(out) as tmp: tmp.write_text(json.dumps(result, indent=1))
    for r in train: print(f"train batch {r.get('batch', '?')}: peak {r.get('peak_gib')} GiB, step {r.get('step_s')} s" if 'error' not in r else f"train: {r['error']}")
    for k, r in sample.items(): print(f"sample {k}: {r.get('seconds')} s, peak {r.get('peak_gib')} GiB" if 'error' not in r else f"sample {k}: {r['error']}")
    print(f"wrote {out} ({result['seconds']} s)")
    return result


if __name__ == '__main__': main()
