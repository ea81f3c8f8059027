#!/usr/bin/env python
"""Time per denoising step and peak memory of one video UNet three ways, on the same config, input and device:

  stock   the stock diffusers UNetMotionModel (its own attention processors)
  cross   ours without an image: spatial attn1 is sparse-causal cross-frame attention with the new frame K/V
  inject  ours with image injection: the one-frame image stream (record pass) + the video pass that injects it
  stream  the image stream alone (part of inject), to see what the second stream costs by itself

The goal: inject costs at most 1.3x the stock step. Examples:

  nice -n 10 python benchmarks/bench_step.py --config tiny
  nice -n 10 python benchmarks/bench_step.py --config medium --reps 3
  python benchmarks/bench_step.py --config sd15 --frames 16 --resolution 512 --dtype bfloat16 --device cuda

Timing: the variants run interleaved (round robin), after warm-up; the median and the fastest step are
reported (on a shared machine the fastest step is the better estimate of the uncontended cost).
Memory: the most one step allocates beyond the weights and inputs. On CUDA torch.cuda.max_memory_allocated
during the step minus what was allocated before it; on the CPU (whose allocator keeps no statistics) the
peak of the running sum of allocations and frees that torch.profiler(profile_memory=True) records.
"""
from __future__ import annotations
import argparse, os, statistics, time

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
import diffusers
diffusers.utils.logging.set_verbosity_error()

VARIANTS = ('stock', 'cross', 'inject', 'stream')
DEFAULTS = {'tiny': dict(frames=8, resolution=64), 'medium': dict(frames=8, resolution=256), 'sd15': dict(frames=16, resolution=512)}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--config', default='tiny', choices=sorted(DEFAULTS), help='UNet size (vb_nb.model.UNET_CONFIGS)')
    ap.add_argument('--frames', type=int, help='video frames (default: 8, sd15: 16)')
    ap.add_argument('--resolution', type=int, help='video size in pixels, square (default: tiny 64, medium 256, sd15 512)')
    ap.add_argument('--batch', type=int, default=1, help='videos per step')
    ap.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16', 'float16'])
    ap.add_argument('--device', default='cpu', help="'cpu', 'cuda', 'cuda:1', ...")
    ap.add_argument('--reps', type=int, default=5, help='timed steps per variant')
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps per variant first')
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    ap.add_argument('--backward', action='store_true', help='time a training step (forward + backward of all UNet weights) instead of inference')
    ap.add_argument('--no-posenc', action='store_true', help='switch the position code off in our variants')
    ap.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated subset of ' + ','.join(VARIANTS))
    ap.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    a = ap.parse_args(argv)
    a.frames = a.frames or DEFAULTS[a.config]['frames']
    a.resolution = a.resolution or DEFAULTS[a.config]['resolution']
    a.variants = [v.strip() for v in a.variants.split(',') if v.strip()]
    bad = [v for v in a.variants if v not in VARIANTS]
    if bad: ap.error(f"unknown variants {bad}; choose from {VARIANTS}")
    from vb_nb.model import LATENT_FACTOR
    if a.resolution % LATENT_FACTOR[a.config]: ap.error(f"--resolution must be a multiple of {LATENT_FACTOR[a.config]} for {a.config}")
    if a.frames < 1 or a.batch < 1 or a.reps < 1: ap.error('--frames, --batch and --reps must be >= 1')
    return a


class Bench:
    "One UNet, its inputs, and a way to run one step of each variant on it."
    def __init__(self, a):
        from vb_nb.model import build_unet, LATENT_FACTOR
        from vb_nb.attention import InjectionContext, install_cross_frame_attention
        self.a, self.device, self.dtype = a, torch.device(a.device), getattr(torch, a.dtype)
        self.unet = build_unet(a.config, seed=0).to(self.device, self.dtype)
        self.unet.requires_grad_(a.backward).train(False)
        self.stock_procs = dict(self.unet.attn_processors)
        self.ctx = InjectionContext(posenc=not a.no_posenc)
        install_cross_frame_attention(self.unet, self.ctx)
        for p in self.unet.parameters(): p.requires_grad_(a.backward)
        self.our_procs = dict(self.unet.attn_processors)
        g = torch.Generator().manual_seed(0)
        n = a.resolution // LATENT_FACTOR[a.config]; self.latent = (n, n)
        c, d = self.unet.config.in_channels, self.unet.config.cross_attention_dim
        mk = lambda *s: torch.randn(*s, generator=g).to(self.device, self.dtype)
        self.video, self.image, self.text, self.uncond = mk(a.batch, c, a.frames, n, n), mk(a.batch, c, n, n), mk(a.batch * a.frames, 77, d), mk(1, 77, d)
        self.t = torch.full((a.batch,), 500, device=self.device, dtype=torch.long)

    def use(self, variant):
        self.unet.set_attn_processor(dict(self.stock_procs if variant == 'stock' else self.our_procs))   # diffusers pops from the dict it gets
        self.ctx.mode = 'stock' if variant == 'stock' else 'cross'

    def step(self, variant):
        from vb_nb.attention import image_injection
        with torch.set_grad_enabled(self.a.backward):
            if variant == 'stream':
                with image_injection(self.unet, self.ctx, self.image, self.t, self.uncond): pass
                return self.sync()
            if variant == 'inject':
                with image_injection(self.unet, self.ctx, self.image, self.t, self.uncond):
                    out = self.unet(self.video, self.t, self.text).sample
            else: out = self.unet(self.video, self.t, self.text).sample
            if self.a.backward:
                out.float().square().mean().backward()
                for p in self.unet.parameters(): p.grad = None
        self.sync()

    def sync(self):
        if self.device.type == 'cuda': torch.cuda.synchronize(self.device)


def cpu_step_peak(b, v):
    "Peak bytes allocated by torch during one step on the CPU: the running sum of the profiler's per-op allocations and frees."
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof: b.step(v)
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage; peak = max(peak, cur)
    return peak


def memory(a, b):
    "Peak memory a step allocates beyond the weights and inputs, per variant: CUDA allocator statistics, or the CPU profiler."
    out = {}
    for v in a.variants:
        b.use(v)
        if b.device.type == 'cuda':
            torch.cuda.empty_cache(); b.sync()
            before = torch.cuda.memory_allocated(b.device); torch.cuda.reset_peak_memory_stats(b.device)
            b.step(v)
            out[v] = torch.cuda.max_memory_allocated(b.device) - before
        elif b.device.type == 'cpu': out[v] = cpu_step_peak(b, v)
    return out


def main(argv=None):
    a = parse(argv)
    torch.set_num_threads(a.threads)
    b = Bench(a)
    print(f"config={a.config} frames={a.frames} resolution={a.resolution}px latent={b.latent[0]}x{b.latent[1]} batch={a.batch} "
          f"dtype={a.dtype} device={a.device} threads={a.threads} {'train step (fwd+bwd)' if a.backward else 'inference step'} "
          f"posenc={'off' if a.no_posenc else 'on'} | UNet {sum(p.numel() for n, p in b.unet.named_parameters() if '.processor.' not in n) / 1e6:.2f} M parameters "
          f"(+{sum(p.numel() for n, p in b.unet.named_parameters() if '.processor.' in n) / 1e6:.2f} M ours)")
    times = {v: [] for v in a.variants}
    for r in range(a.warmup + a.reps):
        for v in a.variants:
            b.use(v); t0 = time.perf_counter(); b.step(v); dt = time.perf_counter() - t0
            if r >= a.warmup: times[v].append(dt)
    mem = {} if a.no_memory else memory(a, b)
    base = statistics.median(times['stock']) if 'stock' in times else None
    weights = sum(p.numel() * p.element_size() for p in b.unet.parameters())
    print(f"weights {weights / 2**20:.1f} MiB; 'peak MiB' = most memory one step allocates beyond weights and inputs")
    print(f"{'variant':8s} {'median s/step':>14s} {'min s/step':>11s} {'x stock':>8s} {'peak MiB':>9s} {'x stock':>8s}")
    for v in a.variants:
        med = statistics.median(times[v])
        m = f"{mem[v] / 2**20:9.1f} {mem[v] / mem['stock'] if mem.get('stock') else float('nan'):8.2f}" if v in mem else f"{'-':>9s} {'-':>8s}"
        print(f"{v:8s} {med:14.4f} {min(times[v]):11.4f} {med / base if base else float('nan'):8.2f} {m}")
    if base and 'inject' in times:
        ratio, ratio_min = statistics.median(times['inject']) / base, min(times['inject']) / min(times['stock'])
        print(f"inject / stock = {ratio:.2f} by median, {ratio_min:.2f} by fastest step (goal <= 1.3: {'met' if ratio <= 1.3 else 'NOT met'} by median)")


if __name__ == '__main__':
    main()
