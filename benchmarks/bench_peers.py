#!/usr/bin/env python
"""vb_nb's default generate against stock diffusers AnimateDiffPipeline on the same UNet weights, frames, size and steps.

  vb_default   vb_nb.sample.generate at its default guidance (text 4.0, image 2.0: three guidance branches)
  vb_one       generate with one guidance scale (text = image = 4.0: two branches)
  stock        diffusers' AnimateDiffPipeline, plain text classifier-free guidance at 4.0 (two branches)

Configs: toy (the embedded default model: 64 px, 8 frames, 25 steps) and medium (vb_nb.model.build_unet('medium'), random
weights, built offline around an 8x VAE and 256-wide CLIP towers; 256 px, 8 frames, 25 steps). The stock pipeline gets a
stock UNetMotionModel with the same weights (without vb_nb's processors and motion-text path), the same VAE, text tower,
tokenizer and DDIM scheduler.

Timing: the variants run interleaved in one process, their order rotating every repetition, with torch pinned to one
thread; after one untimed warm-up each. Per step: (time of the last step's end - time of the first step's end) /
(steps - 1), from each pipeline's step callback. Per video: the whole call. Each repetition gives a ratio against the
stock run of the same repetition; the median and min..max of those ratios are reported. Results: JSON and Markdown in
benchmarks/results/peers/ (--out). AnimateDiff + IP-Adapter is not measured here.

  nice -n 10 python benchmarks/bench_peers.py                  # full: toy and medium
  python benchmarks/bench_peers.py --quick                     # a check: 2 repetitions, 3 steps, results in /tmp
"""
from __future__ import annotations
import argparse, copy, json, os, platform, statistics, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import torch
import diffusers
diffusers.utils.logging.set_verbosity_error()

VARIANTS = ('stock', 'vb_default', 'vb_one')
CONFIGS = {'toy': dict(size=64, frames=8, steps=25, reps=5), 'medium': dict(size=256, frames=8, steps=25, reps=2)}   # medium: 2 repetitions keep a full run near 10 minutes on 2 cores
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


def build(name):
    from diffusers import AnimateDiffPipeline, DDIMScheduler
    from vb_nb.sample import VideoBoothPipeline
    if name == 'toy': pipe, stock_unet = toy_model()
    else:
        model, stock_unet = medium_model()
        pipe = VideoBoothPipeline.from_model(model)
    m = pipe.model
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    stock = AnimateDiffPipeline(vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=stock_unet, motion_adapter=None, scheduler=sched)
    for p in (pipe, stock): p.set_progress_bar_config(disable=True)
    return pipe, stock


class Stamps:
    "Times of each step's end, from a pipeline's step callback."
    def __init__(self): self.t = []
    def vb(self, i, n): self.t.append(time.perf_counter())
    def stock(self, pipe, i, t, kw): self.t.append(time.perf_counter()); return {}
    def per_step(self): return (self.t[-1] - self.t[0]) / (len(self.t) - 1)


def run(variant, pipe, stock, cfg, steps, image, seed):
    "One video of `variant`: (seconds per video, seconds per step)."
    from vb_nb.sample import generate
    s = Stamps()
    t0 = time.perf_counter()
    if variant == 'stock':
        stock(PROMPT, num_frames=cfg['frames'], height=cfg['size'], width=cfg['size'], num_inference_steps=steps, guidance_scale=GUIDANCE,
              generator=torch.Generator().manual_seed(seed), output_type='np', callback_on_step_end=s.stock)
    else:
        ig = IMAGE_GUIDANCE if variant == 'vb_default' else GUIDANCE
        generate(image, PROMPT, model=pipe, num_frames=cfg['frames'], height=cfg['size'], width=cfg['size'], steps=steps,
                 text_guidance=GUIDANCE, image_guidance=ig, seed=seed, refine='director', progress=False, callback=s.vb)
    return time.perf_counter() - t0, s.per_step()


def summary(ratios):
    return dict(median=statistics.median(ratios), min=min(ratios), max=max(ratios))


def bench(name, a):
    from vb_nb.sample import example_images
    cfg = dict(CONFIGS[name]); steps, reps = a.steps or cfg['steps'], a.reps or cfg['reps']
    pipe, stock = build(name)
    image = example_images()['red_checkered_star']
    for v in VARIANTS: run(v, pipe, stock, cfg, 2, image, 0)                 # warm-up, untimed
    times = {v: {'video': [], 'step': []} for v in VARIANTS}
    for r in range(reps):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]   # rotating order
        for v in order:
            video, step = run(v, pipe, stock, cfg, steps, image, r)
            times[v]['video'].append(video); times[v]['step'].append(step)
        print(f"  {name} rep {r + 1}/{reps}: " + ', '.join(f"{v} {times[v]['video'][-1]:.2f} s" for v in VARIANTS), flush=True)
    out = dict(config=name, size=cfg['size'], frames=cfg['frames'], steps=steps, reps=reps, seconds=times, ratios={})
    for v in VARIANTS[1:]:
        out['ratios'][v] = {k: summary([x / y for x, y in zip(times[v][k], times['stock'][k])]) for k in ('step', 'video')}
    return out


def markdown(res, env) -> str:
    lines = [f"# vb_nb against stock AnimateDiffPipeline", '', f"{env['device']}; torch {env['torch']}, diffusers {env['diffusers']}; "
             f"{env['threads']} thread; variants interleaved, order rotating. Command: `{env['command']}`", '',
             '| config | steps x reps | variant | median s/step | median s/video | ratio per step, median (min..max) | ratio per video, median (min..max) |',
             '|---|---|---|---|---|---|---|']
    for r in res:
        for v in VARIANTS:
            t = r['seconds'][v]
            rat = lambda k: '1' if v == 'stock' else f"{r['ratios'][v][k]['median']:.2f} ({r['ratios'][v][k]['min']:.2f}..{r['ratios'][v][k]['max']:.2f})"
            lines.append(f"| {r['config']} {r['size']} px, {r['frames']} frames | {r['steps']} x {r['reps']} | {v} | {statistics.median(t['step']):.3f} | "
                         f"{statistics.median(t['video']):.2f} | {rat('step')} | {rat('video')} |")
    lines += ['', 'stock: AnimateDiffPipeline, text guidance 4.0. vb_default: generate at text 4.0, image 2.0. vb_one: text = image = 4.0.', '']
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
