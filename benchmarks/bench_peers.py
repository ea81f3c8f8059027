#!/usr/bin/env python
"""vb_nb's default generate against stock diffusers AnimateDiffPipeline, and AnimateDiff + IP-Adapter, on the same UNet weights, frames, size and steps.

  vb_default   vb_nb.sample.generate at its default guidance: one scale, 4.0, for text and image (two guidance branches)
  vb_three     generate with separate scales (guidance_scale 4.0, image_guidance_scale 2.0: three guidance branches)
  stock        diffusers' AnimateDiffPipeline, plain text classifier-free guidance at 4.0 (two branches)
  ip_adapter   AnimateDiffPipeline with an IP-Adapter, given the same image prompt (ip_adapter_image=), guidance 4.0

Configs: toy (the embedded default model: 64 px, 8 frames, 25 steps) and medium (vb_nb.model.build_unet('medium'), random
weights, built offline around an 8x VAE and 256-wide CLIP towers; 256 px, 8 frames, 25 steps). The stock pipeline gets a
stock UNetMotionModel with the same weights (without vb_nb's processors and motion-text path), the same VAE, text tower,
tokenizer and DDIM scheduler. The IP-Adapter peer is built offline with random weights: a CLIPVisionModelWithProjection of
vb_nb's image-tower config (random init) and an IP-Adapter state dict (image_proj: a linear map from the tower's projection
to 4 tokens of the UNet's cross-attention width, and a LayerNorm; ip_adapter: to_k_ip / to_v_ip for each cross-attention
layer, shaped like that layer's to_k / to_v), written as safetensors in a temporary folder laid out like an IP-Adapter repo
(models/ip-adapter_random.safetensors, models/image_encoder/) and loaded onto another copy of the stock UNet with the
pipeline's own load_ip_adapter, which installs diffusers' IPAdapterAttnProcessor2_0.

Timing: the variants run interleaved in one process, their order rotating every repetition, with torch pinned to one
thread; after one untimed warm-up each. Per step: (time of the last step's end - time of the first step's end) /
(steps - 1), from each pipeline's step callback. Per video: the whole call. Each repetition gives a ratio against the
stock run of the same repetition; the median and min..max of those ratios are reported. Results: JSON and Markdown in
benchmarks/results/peers/ (--out).

  nice -n 10 python benchmarks/bench_peers.py                  # full: toy and medium
  python benchmarks/bench_peers.py --quick                     # a check: 2 repetitions, 3 steps, results in /tmp
  python benchmarks/bench_peers.py --configs toy --reps 1 --steps 2 --out outputs/peers_smoke   # a smoke run
"""
from __future__ import annotations
import argparse, copy, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import torch
import diffusers
diffusers.utils.logging.set_verbosity_error()

VARIANTS = ('stock', 'vb_default', 'vb_three', 'ip_adapter')
CONFIGS = {'toy': dict(size=64, frames=8, steps=25, reps=5), 'medium': dict(size=256, frames=8, steps=25, reps=2)}   # medium: 2 repetitions keep a full run near 12 minutes on 2 cores
PROMPT, GUIDANCE, IMAGE_GUIDANCE = 'a star drifts to the left, then up over green grass', 4.0, 2.0


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--configs', default='toy,medium', help='comma-separated: toy, medium')
    ap.add_argument('--reps', type=int, default=None, help='timed repetitions per variant (default: toy 5, medium 2)')
    ap.add_argument('--steps', type=int, default=None, help='denoising steps (default 25)')
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    ap.add_argument('--quick', action='store_true', help='a check: 2 repetitions, 3 steps, results written under a temporary folder unless --out')
    ap.add_argument('--out', default=None, help='results folder (default benchmarks/results/peers)')
    a = ap.parse_args(argv)
    a.configs = [c.strip() for c in a.configs.split(',') if c.strip()]
    bad = [c for c in a.configs if c not in CONFIGS]
    if bad: ap.error(f"unknown configs {bad}; choose from {sorted(CONFIGS)}")
    if a.quick: a.reps, a.steps = a.reps or 2, a.steps or 3
    if (a.reps is not None and a.reps < 1) or (a.steps is not None and a.steps < 2): ap.error('--reps must be >= 1 and --steps >= 2')
    a.out = Path(a.out) if a.out else (Path(tempfile.mkdtemp(prefix='bench_peers.')) if a.quick else Path(__file__).parent/'results'/'peers')
    return a


def medium_model():
    "A VideoBooth around build_unet('medium') (random weights, with the motion-text path the default model has), and a stock copy of that UNet."
    from transformers import CLIPTextModel, CLIPVisionModelWithProjection
    from vb_nb.model import VideoBooth, build_unet, build_vae, add_text_to_motion_modules, sd_noise_scheduler
    from vb_nb.clip import toy_clip_config, load_tokenizer
    unet = build_unet('medium', seed=0)
    stock = copy.deepcopy(unet)                       # before vb_nb installs its processors: the same weights, stock attention
    add_text_to_motion_modules(unet)
    vae = build_vae(seed=0, block_out_channels=(32, 64, 64, 64), down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4)
    torch.manual_seed(0)
    cfg = toy_clip_config(width=unet.config.cross_attention_dim, heads=4)
    model = VideoBooth(unet, vae, CLIPTextModel(cfg.text_config), load_tokenizer(), CLIPVisionModelWithProjection(toy_clip_config().vision_config), sd_noise_scheduler())
    return model.eval(), stock.eval()


def toy_model():
    "The embedded default model, and a stock UNetMotionModel loaded from the same weights."
    from diffusers import UNetMotionModel
    from vb_nb.sample import load_model, toy_model_dir
    pipe = load_model(device='cpu')
    stock = UNetMotionModel.from_pretrained(toy_model_dir()/'unet')
    return pipe, stock.eval()


IP_ADAPTER_TOKENS = 4                                 # the basic IP-Adapter's image tokens (diffusers' loader infers 4 from `proj.weight`)


def cross_attention_layers(unet):
    "The attention layers an IP-Adapter attaches to, in the order diffusers' loader numbers them: every cross-attention (attn2) outside the motion modules."
    return [n[:-len('.processor')] for n in unet.attn_processors if n.endswith('attn2.processor') and 'motion_modules' not in n]


def random_ip_adapter(unet, image_encoder, seed=0) -> dict:
    """An IP-Adapter state dict with random weights, keyed as diffusers' `load_ip_adapter` reads a .safetensors file.

    image_proj.proj (4 tokens x the UNet's cross-attention width, from the encoder's projection) and image_proj.norm;
    ip_adapter.{1, 3, 5, ...}.to_k_ip / to_v_ip: the loader counts cross-attention layers in `attn_processors` order,
    from 1 in steps of 2 (the original checkpoints number self- and cross-attention layers together)."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g) * shape[-1] ** -0.5        # unit-variance outputs for unit-variance inputs
    width, embed = unet.config.cross_attention_dim, image_encoder.config.projection_dim
    sd = {'image_proj.proj.weight': rand(IP_ADAPTER_TOKENS * width, embed), 'image_proj.proj.bias': torch.zeros(IP_ADAPTER_TOKENS * width),
          'image_proj.norm.weight': torch.ones(width), 'image_proj.norm.bias': torch.zeros(width)}
    for i, name in enumerate(cross_attention_layers(unet)):
        attn = unet.get_submodule(name)
        sd[f'ip_adapter.{2 * i + 1}.to_k_ip.weight'] = rand(*attn.to_k.weight.shape)
        sd[f'ip_adapter.{2 * i + 1}.to_v_ip.weight'] = rand(*attn.to_v.weight.shape)
    return sd


def ip_adapter_pipeline(stock, image_encoder_config, seed=0):
    "An AnimateDiffPipeline sharing `stock`'s parts but a copy of its UNet, with a random IP-Adapter loaded by `load_ip_adapter` from a temporary folder."
    from diffusers import AnimateDiffPipeline
    from safetensors.torch import save_file
    from transformers import CLIPVisionModelWithProjection
    from vb_nb.clip import _quiet_transformers                 # no save/load progress bars in the benchmark's output
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(image_encoder_config).eval()
    pipe = AnimateDiffPipeline(vae=stock.vae, text_encoder=stock.text_encoder, tokenizer=stock.tokenizer, unet=copy.deepcopy(stock.unet),
                               motion_adapter=None, scheduler=copy.deepcopy(stock.scheduler))
    with tempfile.TemporaryDirectory(prefix='ip_adapter.') as d, _quiet_transformers():
        encoder.save_pretrained(Path(d)/'models'/'image_encoder')
        save_file(random_ip_adapter(pipe.unet, encoder, seed), Path(d)/'models'/'ip-adapter_random.safetensors')
        pipe.load_ip_adapter(d, subfolder='models', weight_name='ip-adapter_random.safetensors', image_encoder_folder='image_encoder')
    return pipe


def build(name) -> dict:
    "The variants' pipelines: {'vb': VideoBoothPipeline, 'stock': AnimateDiffPipeline, 'ip_adapter': AnimateDiffPipeline with an IP-Adapter}."
    from diffusers import AnimateDiffPipeline, DDIMScheduler
    from vb_nb.sample import VideoBoothPipeline
    if name == 'toy': pipe, stock_unet = toy_model()
    else:
        model, stock_unet = medium_model()
        pipe = VideoBoothPipeline.from_model(model)
    m = pipe.model
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    stock = AnimateDiffPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=stock_unet, motion_adapter=None, scheduler=sched)
    pipes = dict(vb=pipe, stock=stock, ip_adapter=ip_adapter_pipeline(stock, m.image_encoder.config))
    for p in pipes.values(): p.set_progress_bar_config(disable=True)
    return pipes


class Stamps:
    "Times of each step's end, from a pipeline's step callback."
    def __init__(self): self.t = []
    def __call__(self, pipe, i, t, kw): self.t.append(time.perf_counter()); return {}
    def per_step(self): return (self.t[-1] - self.t[0]) / (len(self.t) - 1)


def animatediff(pipe, cfg, steps, seed, callback=None, **kw):
    "A video from a stock AnimateDiffPipeline at the benchmark's prompt, size, frames and guidance (`kw`: ip_adapter_image=)."
    return pipe(PROMPT, num_frames=cfg['frames'], height=cfg['size'], width=cfg['size'], num_inference_steps=steps, guidance_scale=GUIDANCE,
                generator=torch.Generator().manual_seed(seed), output_type='np', callback_on_step_end=callback, **kw).frames


def run(variant, pipes, cfg, steps, image, seed):
    "One video of `variant`: (seconds per video, seconds per step). `image`: the image prompt's path."
    from PIL import Image
    from vb_nb.sample import generate
    s = Stamps()
    t0 = time.perf_counter()
    if variant == 'stock': animatediff(pipes['stock'], cfg, steps, seed, s)
    elif variant == 'ip_adapter':
        with Image.open(image) as im: pil = im.convert('RGB')     # read inside the clock, as generate reads its image from the path
        animatediff(pipes['ip_adapter'], cfg, steps, seed, s, ip_adapter_image=pil)
    else:
        scales = dict(image_guidance_scale=IMAGE_GUIDANCE) if variant == 'vb_three' else {}     # vb_default: generate's own
        generate(image, PROMPT, model=pipes['vb'], num_frames=cfg['frames'], height=cfg['size'], width=cfg['size'], num_inference_steps=steps,
                 guidance_scale=GUIDANCE, **scales, seed=seed, refine='director', progress=False, callback_on_step_end=s)
    return time.perf_counter() - t0, s.per_step()


def summary(ratios):
    return dict(median=statistics.median(ratios), min=min(ratios), max=max(ratios))


def bench(name, a, pipes=None):
    "Time every variant on config `name` (`pipes`: from `build(name)`, built here if None)."
    from vb_nb.sample import example_images
    cfg = dict(CONFIGS[name]); steps, reps = a.steps or cfg['steps'], a.reps or cfg['reps']
    pipes = pipes or build(name)
    image = example_images()['red_checkered_star']
    for v in VARIANTS: run(v, pipes, cfg, 2, image, 0)                       # warm-up, untimed
    times = {v: {'video': [], 'step': []} for v in VARIANTS}
    for r in range(reps):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]   # rotating order
        for v in order:
            video, step = run(v, pipes, cfg, steps, image, r)
            times[v]['video'].append(video); times[v]['step'].append(step)
        print(f"  {name} rep {r + 1}/{reps}: " + ', '.join(f"{v} {times[v]['video'][-1]:.2f} s" for v in VARIANTS), flush=True)
    out = dict(config=name, size=cfg['size'], frames=cfg['frames'], steps=steps, reps=reps, seconds=times, ratios={})
    for v in VARIANTS[1:]:
        out['ratios'][v] = {k: summary([x / y for x, y in zip(times[v][k], times['stock'][k])]) for k in ('step', 'video')}
    return out


def markdown(res, env) -> str:
    lines = [f"# vb_nb against stock AnimateDiffPipeline and AnimateDiff + IP-Adapter", '', f"{env['device']}; torch {env['torch']}, diffusers {env['diffusers']}; "
             f"{env['threads']} thread; variants interleaved, order rotating. Command: `{env['command']}`", '',
             '| config | steps x reps | variant | median s/step | median s/video | ratio per step, median (min..max) | ratio per video, median (min..max) |',
             '|---|---|---|---|---|---|---|']
    for r in res:
        for v in VARIANTS:
            t = r['seconds'][v]
            rat = lambda k: '1' if v == 'stock' else f"{r['ratios'][v][k]['median']:.2f} ({r['ratios'][v][k]['min']:.2f}..{r['ratios'][v][k]['max']:.2f})"
            lines.append(f"| {r['config']} {r['size']} px, {r['frames']} frames | {r['steps']} x {r['reps']} | {v} | {statistics.median(t['step']):.3f} | "
                         f"{statistics.median(t['video']):.2f} | {rat('step')} | {rat('video')} |")
    lines += ['', 'stock: AnimateDiffPipeline, text guidance 4.0. vb_default: generate at its defaults, one scale 4.0 for text and image. vb_three: text 4.0, image 2.0. '
              'ip_adapter: AnimateDiffPipeline with a random IP-Adapter (loaded by load_ip_adapter), the same image prompt, text guidance 4.0.', '']
    return '\n'.join(lines)


def write_atomic(path: Path, text: str):
    from vb_nb.core import atomic_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp: tmp.write_text(text)


def main(argv=None):
    a = parse(argv)
    torch.set_num_threads(a.threads)
    env = dict(device=f"CPU {platform.machine()}, {os.cpu_count()} cores", threads=torch.get_num_threads(), torch=torch.__version__,
               diffusers=diffusers.__version__, command='python benchmarks/bench_peers.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    res = []
    for name in a.configs:
        print(f"{name}:", flush=True)
        res.append(bench(name, a))
    md = markdown(res, env)
    print(md)
    write_atomic(a.out/'peers.json', json.dumps(dict(env=env, results=res), indent=1))
    write_atomic(a.out/'peers.md', md)
    print(f"wrote {a.out/'peers.json'} and {a.out/'peers.md'}")


if __name__ == '__main__':
    main()
