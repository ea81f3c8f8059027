#!/usr/bin/env python
"""Train a toy base far longer than a 2-core CPU allows (on a GPU), then probe whether it follows the motion words.

The train notebook finds that no toy base trained on the CPU follows the motion words ("Does the noise tell the base
where to go?") and names the next measurement: a base trained far longer, with both fixes (the zero-terminal-SNR
schedule and the identity-trained text layers). This script makes such bases with the library's own pieces
(`build_stage_model`, `fit`, `save_final`) around the shipped VAE, and writes them where the notebook's probe finds them
(outputs/toy/<name>/final). Two things differ from `vb_nb_train --stage base`, for speed only:

  * the training clips are rendered in memory from toyworld (`random_spec(0, 'train', i)`, the corpus's own clips and
    as many more as asked; no mp4 round trip, no detector pass: the base needs only frames and captions);
  * with --cache, the frozen VAE posterior and text states of every clip are computed once and the step samples
    from them (the same distribution as TextToVideo.forward's; the UNet is then the whole step).

The bases the notebook probes were made on one H100 (80 GB) by an earlier form of this script, with the same pieces and
settings, that gave each run a fixed time budget instead of taking --steps (at 0.5 s a step without the cache and
0.2-0.3 s with it; their logs, final/gpu_log.json, record the steps those budgets gave). These commands train the same
runs:

  L=outputs/toy/text_layers/text_encoder_layers.safetensors
  python benchmarks/train_base_gpu.py --name base_gpu_zsnr_a --schedule zero_snr --text-layers $L --steps 645 --lr 1e-3 --warmup 300
  python benchmarks/train_base_gpu.py --name base_gpu_zsnr --unet outputs/toy/base_gpu_zsnr_a/final --steps 999 --lr 6e-4 --warmup 50 --cache
  python benchmarks/train_base_gpu.py --name base_gpu_sd_a --schedule sd --text-layers $L --steps 630 --lr 1e-3 --warmup 300
  python benchmarks/train_base_gpu.py --name base_gpu_sd --unet outputs/toy/base_gpu_sd_a/final --steps 1382 --lr 6e-4 --warmup 50 --cache

  python benchmarks/train_base_gpu.py --probe outputs/toy/base_gpu_zsnr/final      # the word probe alone

--motion-text trains the motion modules' text path along with the base. On the CPU a path trained so did not learn the
motion words, and a new path trained alone afterwards did (train notebook, "A base trained with the path"). So the next
GPU run gives a base trained as above a new path with the library's own stage:

  vb_nb_train --stage motion_text --unet outputs/toy/base_gpu_zsnr/final --vae vb_nb/assets/toy/vae \
      --out outputs/toy/base_gpu_zsnr_path --max-steps 1200 --batch-size 8 --lr 1e-3 --min-timestep 700

All at batch 128 on 32,000 clips. A run checkpoints as `fit` does and resumes when started again with the same --name.
A longer run spans several calls of limited time: --seconds stops it at the first checkpoint after that much training,
writes final/ and the summary as at the end, and says how to go on; the same command (same --steps, so the same
learning-rate schedule) resumes it:

  python benchmarks/train_base_gpu.py --name base_long --schedule zero_snr --steps 17000 --cache --seconds 420

The word probe is the evaluation notebook's `word_following`: 16 held-out seeds, each under the four straight-motion
prompts, the base alone; the share of the 64 videos whose subject goes the way its prompt says (chance: 0.25).
"""
from __future__ import annotations
import argparse, json, os, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
import numpy as np
import torch

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _render(span):
    from vb_nb.toyworld import random_spec
    from vb_nb.eval import real_clip
    lo, hi = span
    frames, captions = np.empty((hi - lo, 8, 64, 64, 3), np.uint8), []
    for k, i in enumerate(range(lo, hi)):
        spec, caption = random_spec(0, 'train', i)
        frames[k] = real_clip(spec); captions.append(caption)
    return frames, captions


def rendered_clips(n: int, root) -> tuple[np.ndarray, list]:
    "The first `n` toyworld training clips (8 frames, 64 px, uint8) and captions, rendered once on all cores and kept under `root`."
    from multiprocessing import Pool
    from tqdm.auto import tqdm
    from vb_nb.core import atomic_path
    npy, js = root/f'train_{n}.npy', root/f'train_{n}.json'
    if not (npy.exists() and js.exists()):
        root.mkdir(parents=True, exist_ok=True)
        spans = [(i, min(n, i + 500)) for i in range(0, n, 500)]
        with Pool(max(1, (os.cpu_count() or 2) - 1)) as pool:
            parts = list(tqdm(pool.imap(_render, spans), total=len(spans), desc='rendering clips'))
        with atomic_path(npy) as tmp:
            with open(tmp, 'wb') as f: np.save(f, np.concatenate([p[0] for p in parts]))
        with atomic_path(js) as tmp: tmp.write_text(json.dumps([c for p in parts for c in p[1]]))
    return np.load(npy, mmap_mode='r'), json.loads(js.read_text())


def word_probe(unet_folder, n_seeds: int = 16) -> tuple[float, int]:
    "vb_nb.eval.word_following of a base UNet folder around the shipped VAE: (share, videos)."
    from vb_nb.model import VideoBooth
    from vb_nb.sample import toy_model_dir
    from vb_nb.eval import word_following
    model = VideoBooth.from_toy_parts(toy_model_dir()/'vae', unet_folder).eval().to(DEVICE)
    return word_following(model, n_seeds), 4 * n_seeds


class CachedBase(torch.nn.Module):
    "TextToVideo's loss on clip indices, with the frozen VAE and text tower replaced by their outputs computed once."
    def __init__(self, base, mean, std, text, empty, text_dropout: float):
        super().__init__()
        self.unet, self.scheduler = base.unet, base.noise_scheduler
        self.mean, self.std, self.text, self.empty, self.text_dropout = mean, std, text, empty, text_dropout

    def forward(self, idx):
        from vb_nb.train import diffusion_inputs, diffusion_target
        mean, std = self.mean[idx].float(), self.std[idx].float()
        b, c, f, h, w = mean.shape
        eps = torch.randn((b * f, c, h, w), device=idx.device).unflatten(0, (b, f)).transpose(1, 2)   # drawn per frame, as the VAE posterior draws it
        latents = mean + std * eps
        noise, t, noisy = diffusion_inputs(latents, self.scheduler)
        drop = torch.rand(len(idx), device=idx.device) < self.text_dropout
        text = torch.where(drop[:, None, None], self.empty, self.text[idx].float())
        pred = self.unet(noisy, t, text.repeat_interleave(latents.shape[2], 0)).sample
        return torch.nn.functional.mse_loss(pred, diffusion_target(self.scheduler, latents, noise, t))


@torch.no_grad()
def cache_frozen(base, clips, captions, chunk: int = 256):
    "The scaled VAE posterior (mean, std) of every clip and the text states of every caption, in fp16 on the base's device."
    from tqdm.auto import tqdm
    from vb_nb.clip import encode_text
    device, s = next(base.unet.parameters()).device, base.vae.config.scaling_factor
    means, stds = [], []
    for i in tqdm(range(0, len(captions), chunk), desc='caching VAE posteriors'):
        x = torch.from_numpy(np.array(clips[i:i + chunk])).to(device).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
        post = base.vae.encode(x.flatten(0, 1)).latent_dist
        to_video = lambda z: (z * s).unflatten(0, x.shape[:2]).transpose(1, 2).half()
        means.append(to_video(post.mean)); stds.append(to_video(post.std))
    text = torch.cat([encode_text(base.text_encoder, base.tokenizer, captions[i:i + 512]).half() for i in range(0, len(captions), 512)])
    return torch.cat(means), torch.cat(stds), text, encode_text(base.text_encoder, base.tokenizer, [''])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n\n', 1)[1])
    ap.add_argument('--name', help='the run: it writes outputs/toy/<name> (checkpoints, final/)')
    ap.add_argument('--schedule', default='', choices=['', 'sd', 'zero_snr'], help="a new base's noise schedule ('' with --unet: the UNet's own)")
    ap.add_argument('--text-layers', default='', help='text layers file to train with (default: the --unet\'s own, else the toy CLIP\'s)')
    ap.add_argument('--unet', default='', help='a trained base UNet folder to go on training')
    ap.add_argument('--motion-text', action='store_true', help="give a new base's motion modules the text (a --unet keeps its own)")
    ap.add_argument('--clips', type=int, default=32000, help='toyworld training clips to render')
    ap.add_argument('--steps', type=int, default=1000); ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--lr', type=float, default=1e-3); ap.add_argument('--warmup', type=int, default=300)
    ap.add_argument('--checkpoint-every', type=int, default=200)
    ap.add_argument('--cache', action='store_true', help='compute the frozen VAE and text outputs once (faster steps, same distribution)')
    ap.add_argument('--seconds', type=float, default=None, help='stop at the first checkpoint after this many seconds of training (run again to go on)')
    ap.add_argument('--probe', default='', help='only run the word probe on this base UNet folder')
    ap.add_argument('--probe-clips', type=int, default=16, help='held-out seeds of the word probe (four videos each)')
    a = ap.parse_args(argv)
    if a.probe:
        if not (Path(a.probe)/'config.json').is_file(): ap.error(f"--probe {a.probe!r} is not a base UNet folder (no config.json in it)")
        t = time.time(); share, n = word_probe(a.probe, a.probe_clips)
        print(f"word probe {a.probe}: follows the word in {share:.2f} of {n} videos ({time.time() - t:.0f} s)"); return
    if not a.name: ap.error('--name is required to train (or give --probe)')
    if a.seconds is not None and not a.seconds >= 0: ap.error(f'--seconds must be a number of seconds >= 0, got {a.seconds}')
    from vb_nb.core import outputs_dir, atomic_path
    from vb_nb.train import TrainConfig, fit, stage_loss, build_stage_model, StageInputs, save_final, hardware, checkpoints
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    out = outputs_dir()/'toy'/a.name
    clips, captions = rendered_clips(a.clips, outputs_dir()/'toy'/'rendered')
    from vb_nb.sample import toy_model_dir
    base = build_stage_model('base', StageInputs(vae=str(toy_model_dir()/'vae'), text_layers=a.text_layers, unet=a.unet), noise_schedule=a.schedule,
                              motion_text=a.motion_text).to(DEVICE)
    cfg = TrainConfig(stage='base', out_dir=str(out), max_steps=a.steps, batch_size=a.batch, lr=a.lr, warmup_steps=a.warmup, lr_schedule='cosine',
                      checkpoint_every=a.checkpoint_every, sample_steps=0, noise_schedule=a.schedule,
                      motion_text=a.motion_text)
    if a.cache:
        model = CachedBase(base, *cache_frozen(base, clips, captions), text_dropout=cfg.text_dropout)
        loss_fn, batch_fn = (lambda m, idx: m(idx)), (lambda micro: torch.randint(len(captions), (a.batch,), device=DEVICE))
    else:
        frames = torch.from_numpy(np.array(clips)).to(DEVICE)   # a copy: the rendered clips are a read-only memory map
        def batch_fn(micro):
            idx = torch.randint(len(captions), (a.batch,))
            return dict(pixel_values=frames[idx.to(DEVICE)].permute(0, 1, 4, 2, 3).float() / 127.5 - 1, caption=[captions[i] for i in idx.tolist()])
        model, loss_fn = base, stage_loss('base', cfg)
    t = time.time()
    class OutOfTime(Exception): pass
    def on_checkpoint(step, ck):
        if a.seconds is not None and step < cfg.max_steps and time.time() - t >= a.seconds: raise OutOfTime(step)
    try: losses = fit(cfg, model, loss_fn, batch_fn, on_checkpoint=on_checkpoint)
    except OutOfTime as stop:
        losses = json.loads((checkpoints(out)[-1]/'state.json').read_text())['losses']
        print(f"{a.name}: stopped at step {stop.args[0]} of {a.steps} after {a.seconds:g} s of training; the same command goes on from there")
    final = save_final('base', base.cpu(), out/'final')
    log = dict(name=a.name, args=vars(a), seconds_this_run=round(time.time() - t, 1), hardware=hardware(), losses=losses)
    with atomic_path(out/'summary.json') as tmp: tmp.write_text(json.dumps(log))
    k = max(1, len(losses) // 10)
    print(f"{a.name}: {len(losses)} steps; loss by tenths:", ' '.join(f"{np.mean(losses[i:i + k]):.4f}" for i in range(0, len(losses), k)))
    t = time.time(); share, n = word_probe(final, a.probe_clips)
    print(f"word probe {final}: follows the word in {share:.2f} of {n} videos ({time.time() - t:.0f} s)")


if __name__ == '__main__': main()
