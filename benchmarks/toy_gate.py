"""The feasibility gate for a toy base that learns on a 2-core CPU.

A candidate base is a text-to-image UNet (diffusers' `UNet2DConditionModel`, the role Stable Diffusion plays) trained
on single toyworld frames whose latents and caption states are encoded once, before training. It trains for a budget
of CPU time, saving its weights at fixed fractions of the budget; each saved UNet then draws the benchmark's 24
held-out prompts (text only, and with the appearance named) for 3 seeds, and the benchmark's oracle (the toy detector
and the colour vote of `vb_nb.eval`) scores the images. The gate: category >= 0.6 on 'text only' and colour >= 0.7 on
'appearance in text' within 30 minutes of training on 2 threads.

    python benchmarks/toy_gate.py train --name textured --minutes 30
    python benchmarks/toy_gate.py decoder --world textured        # the subject-weighted decoder fine-tune
    python benchmarks/toy_gate.py eval --name textured

Training resumes from its last checkpoint when started again with the same command; `--fresh` starts over.
Weights go to outputs/gate/NAME (not committed), results to benchmarks/results/gate/NAME.json.
"""
from __future__ import annotations
import argparse, copy, functools, json, math, os, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'/'gate'
THREADS = 2                      # the budget is wall time on 2 threads; CPU time / THREADS is what is counted
WORLDS = {   # name -> (flat backgrounds?, subject size factor)
    'textured': (False, 1.0),        # toyworld as it is
    'flat': (True, 1.0),             # backgrounds in their texture's mean colour
    'large': (False, 1.5),           # subjects half as large again
    'flat_large': (True, 1.5),
}

# ---------------------------------------------------------------- the world
from vb_nb import toyworld as _tw
_RANDOM_SPEC = _tw.random_spec

def use_world(world: str):
    "Make toyworld draw `world`'s clips (toyworld's own options; render_clip and benchmark_prompts look random_spec up at call time)."
    if world not in WORLDS: raise ValueError(f"unknown world {world!r}; choose from {list(WORLDS)}")
    flat, factor = WORLDS[world]
    _tw.random_spec = functools.partial(_RANDOM_SPEC, subject_scale=factor, flat_background=flat)

def training_frames(world: str, n_clips: int, per_clip: int, seed: int = 0):
    "uint8 frames (N, 64, 64, 3), subject masks (N, 64, 64), one caption per frame (its clip's), from the train split."
    use_world(world)
    frames, masks, captions = [], [], []
    for i in range(n_clips):
        spec, caption = _tw.random_spec(seed, 'train', i)
        fr, _, mk = _tw.render_clip(spec)
        idx = np.sort(np.random.default_rng([seed, i]).choice(len(fr), per_clip, replace=False))   # frames anywhere in the clip
        frames.append(fr[idx]); masks.append(mk[idx]); captions += [caption] * per_clip
    return np.concatenate(frames), np.concatenate(masks), captions

# ---------------------------------------------------------------- frozen parts
def frozen_parts():
    "The shipped toy VAE, text tower (with the base's text layers) and tokenizer."
    from diffusers import AutoencoderKL
    from vb_nb.clip import toy_text_encoder, load_tokenizer, TEXT_LAYERS_FILE
    import vb_nb
    toy = Path(vb_nb.__file__).parent/'assets'/'toy'
    vae = AutoencoderKL.from_pretrained(toy/'vae').eval().requires_grad_(False)
    text = toy_text_encoder(toy/'unet'/TEXT_LAYERS_FILE).eval()
    return vae, text, load_tokenizer()

@torch.no_grad()
def encode_captions(text, tokenizer, captions, batch: int = 256):
    "Per-token states (N, 77, D) and the mean state over the caption's tokens up to its end token (N, D)."
    from vb_nb.clip import tokenize, CLIP_EOS_ID
    states, pooled = [], []
    for i in range(0, len(captions), batch):
        ids = tokenize(tokenizer, captions[i:i + batch])
        h = text(ids).last_hidden_state
        upto = (torch.cumsum(ids == CLIP_EOS_ID, 1) - (ids == CLIP_EOS_ID).long()) == 0      # start token .. first end token
        states.append(h); pooled.append((h * upto[..., None]).sum(1) / upto.sum(1, keepdim=True))
    return torch.cat(states), torch.cat(pooled)

@torch.no_grad()
def encode_frames(vae, frames, batch: int = 256):
    "Scaled latents (N, 4, 16, 16): the posterior mode times the VAE's scaling factor."
    out = []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(frames[i:i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        out.append(vae.encode(x).latent_dist.mode() * vae.config.scaling_factor)
    return torch.cat(out)

def cache(world: str, n_clips: int, per_clip: int):
    "Latents, subject masks at the latents' size, caption states, pooled states and the empty caption's, encoded once and kept in outputs/gate/cache_*.pt."
    from vb_nb.core import outputs_dir, atomic_path
    path = outputs_dir()/'gate'/f'cache_{world}_{n_clips}x{per_clip}.pt'
    if path.exists():
        c = torch.load(path, weights_only=True)
        if 'masks' in c: return c                       # caches written before the masks were kept are made again
    t0 = time.time()
    frames, masks, captions = training_frames(world, n_clips, per_clip)
    vae, text, tok = frozen_parts()
    lat = encode_frames(vae, frames)
    states, pooled = encode_captions(text, tok, captions)
    null_s, null_p = encode_captions(text, tok, [''])
    m = F.max_pool2d(torch.from_numpy(masks).float()[:, None], 4)        # a latent cell is the subject's if any of its pixels is
    c = dict(latents=lat, masks=m.bool(), states=states.half(), pooled=pooled, null_states=null_s[0], null_pooled=null_p[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp: torch.save(c, tmp)
    print(f"cached {len(lat)} frames of {n_clips} clips in {time.time() - t0:.0f} s -> {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}")
    return c

# ---------------------------------------------------------------- the candidate base
POOLS = ('eos', 'all', 'none')   # the caption's pooled state: mean up to its end token, mean over all 77 states, or none

def build_base(width: int = 64, channels=(32, 64), seed: int = 0, pool: str = 'eos'):
    "A text-to-image UNet2DConditionModel: text cross-attention at the top level, and (unless pool='none') the pooled caption added to the time embedding (SDXL's 'text_time', which UNetMotionModel.from_unet2d keeps)."
    from diffusers import UNet2DConditionModel
    torch.manual_seed(seed)
    extra = {} if pool == 'none' else dict(addition_embed_type='text_time', addition_time_embed_dim=8, projection_class_embeddings_input_dim=width + 8)
    return UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=tuple(channels), layers_per_block=1,
                                down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'), up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'),
                                cross_attention_dim=width, attention_head_dim=(16, 16), norm_num_groups=8, **extra)

def pooled_of(states, pooled_eos, pool: str):
    "The pooled caption the UNet gets: the cached mean up to the end token, the mean of all states, or None."
    return {'eos': pooled_eos, 'all': None if states is None else states.float().mean(1), 'none': None}[pool]

def added(pooled):
    "The UNet's added conditions as keyword arguments: the pooled caption and one constant 'time id' (none without a pooled caption)."
    return {} if pooled is None else dict(added_cond_kwargs=dict(text_embeds=pooled, time_ids=torch.zeros(len(pooled), 1)))

def noise_scheduler():
    from vb_nb.model import sd_noise_scheduler
    return sd_noise_scheduler()

def min_snr_weights(sched, t, gamma: float = 5.0):
    "Min-SNR-gamma loss weights for epsilon prediction (Hang et al. 2023): min(SNR, gamma) / SNR."
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr

# ---------------------------------------------------------------- training
def cpu_seconds() -> float: return time.process_time() / THREADS

def train(name: str, world: str = 'textured', minutes: float = 30.0, n_clips: int = 4000, per_clip: int = 2, batch: int = 64,
          lr: float = 1e-3, dropout: float = 0.1, gamma: float = 5.0, ema: float = 0.999, save_at=(10, 20, 30), fresh: bool = False, seed: int = 0,
          match: str|None = None, subject_weight: float = 0.0, pool: str = 'eos'):
    """Train a candidate base for `minutes` of 2-thread CPU time; keep its weights (and their EMA) at each of `save_at` minutes.
    With `match`, the name of a finished run of the same UNet and batch, train the steps that run took instead: the same
    work, whatever else the machine is doing meanwhile (CPU time is inflated when other processes share the cores)."""
    from vb_nb.core import outputs_dir, atomic_path, atomic_folder
    torch.set_num_threads(THREADS)
    out = outputs_dir()/'gate'/name
    if fresh and out.exists():
        import shutil; shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    steps_at = None
    if match is not None:
        ref = json.loads((outputs_dir()/'gate'/match/'train_log.json').read_text())
        for k in ('batch', 'n_clips', 'per_clip'):
            if ref['config'][k] != locals()[k]: raise SystemExit(f"--match {match}: its {k} is {ref['config'][k]}, not {locals()[k]}")
        steps_at = {float(k.rsplit('_', 1)[1]): v for k, v in ref['steps_at'].items()}
        minutes, save_at = max(steps_at), sorted(steps_at)
    config = dict(world=world, minutes=minutes, match=match, **({'subject_weight': subject_weight} if subject_weight else {}), **({'pool': pool} if pool != 'eos' else {}), n_clips=n_clips, per_clip=per_clip, batch=batch, lr=lr, dropout=dropout, gamma=gamma,
                  ema=ema, save_at=list(save_at), seed=seed, threads=THREADS)
    cfg_path = out/'config.json'
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != config:
        raise SystemExit(f"{out.name} was started with another configuration ({cfg_path.read_text()}): use --fresh or another --name")
    cfg_path.write_text(json.dumps(config, indent=1))
    c = cache(world, n_clips, per_clip)
    unet, sched = build_base(c['states'].shape[-1], seed=seed, pool=pool), noise_scheduler()
    avg = copy.deepcopy(unet).requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    state = dict(step=0, seconds=0.0, losses=[], saved=[])
    ck = out/'checkpoint.pt'
    if ck.exists():
        s = torch.load(ck, weights_only=True)
        unet.load_state_dict(s['unet']); avg.load_state_dict(s['avg']); opt.load_state_dict(s['opt']); state = s['state']
        print(f"resumed {name} at step {state['step']} ({state['seconds'] / 60:.1f} min)")
    g = torch.Generator().manual_seed(seed * 1000 + state['step'])
    N, budget = len(c['latents']), minutes * 60
    pending = [m for m in save_at if f'min_{m:g}' not in state['saved']]
    done = (lambda: state['step'] >= steps_at[max(steps_at)]) if steps_at else (lambda: state['seconds'] >= budget)
    due = (lambda m: state['step'] >= steps_at[m]) if steps_at else (lambda m: state['seconds'] >= m * 60)
    last_ck, t_start = time.time(), cpu_seconds() - state['seconds']
    unet.train()
    while not done():
        idx = torch.randint(N, (batch,), generator=g)
        x0 = c['latents'][idx]
        states, pooled = c['states'][idx].float(), c['pooled'][idx]
        drop = torch.rand(batch, generator=g) < dropout
        states = torch.where(drop[:, None, None], c['null_states'].float(), states)
        pooled = torch.where(drop[:, None], c['null_pooled'], pooled)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch,), generator=g)
        xt = sched.add_noise(x0, noise, t)
        pred = unet(xt, t, states, **added(pooled_of(states, pooled, pool))).sample
        w = 1 + subject_weight * c['masks'][idx].float()                 # the subject's cells weighted (1 + subject_weight)
        loss = ((((pred - noise) ** 2) * w).mean((1, 2, 3)) / w.mean((1, 2, 3)) * min_snr_weights(sched, t, gamma)).mean()
        opt.zero_grad(set_to_none=True); loss.backward(); torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0); opt.step()
        with torch.no_grad():
            d = min(ema, (1 + state['step']) / (10 + state['step']))
            for pa, pu in zip(avg.parameters(), unet.parameters()): pa.lerp_(pu, 1 - d)
        state['step'] += 1; state['seconds'] = cpu_seconds() - t_start; state['losses'].append(round(loss.item(), 5))
        if state['step'] % 100 == 0:
            print(f"step {state['step']}  {state['seconds'] / 60:.1f} min  loss {np.mean(state['losses'][-100:]):.4f}", flush=True)
        while pending and due(pending[0]):
            m = pending.pop(0)
            for tag, net in (('raw', unet), ('ema', avg)):
                with atomic_folder(out/f'min_{m:g}_{tag}') as tmp: net.save_pretrained(tmp)
            state['saved'].append(f'min_{m:g}'); state[f'step_at_min_{m:g}'] = state['step']
        if time.time() - last_ck > 180 or done():
            with atomic_path(ck) as tmp: torch.save(dict(unet=unet.state_dict(), avg=avg.state_dict(), opt=opt.state_dict(), state=state), tmp)
            last_ck = time.time()
    log = dict(config=config, steps=state['step'], seconds=state['seconds'], seconds_per_step=state['seconds'] / max(state['step'], 1),
               params=sum(p.numel() for p in unet.parameters()), steps_at={k: v for k, v in state.items() if k.startswith('step_at')},
               loss_per_100=[round(float(np.mean(state['losses'][i:i + 100])), 5) for i in range(0, len(state['losses']), 100)])
    with atomic_path(out/'train_log.json') as tmp: tmp.write_text(json.dumps(log, indent=1))
    print(f"trained {name}: {log['steps']} steps in {log['seconds'] / 60:.1f} min ({log['seconds_per_step']:.2f} s a step), {log['params']:,} parameters")
    return log

# ---------------------------------------------------------------- the decoder fine-tune
def finetune_decoder(world: str = 'textured', steps: int = 400, batch: int = 16, lr: float = 5e-4, subject_weight: float = 9.0,
                     n_clips: int = 800, seed: int = 0):
    "The shipped VAE with its decoder fine-tuned on `world`'s frames, the subject's pixels weighted (1 + subject_weight)."
    from vb_nb.core import outputs_dir, atomic_folder, atomic_path
    torch.set_num_threads(THREADS)
    out = outputs_dir()/'gate'/f'decoder_{world}'
    if (out/'config.json').exists(): print(f"{out.name} exists"); return out
    t0 = cpu_seconds()
    frames, masks, _ = training_frames(world, n_clips, 4, seed=seed + 1)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    m = F.max_pool2d(torch.from_numpy(masks).float()[:, None], 3, 1, 1)
    vae = frozen_parts()[0]
    vae.decoder.requires_grad_(True); vae.post_quant_conv.requires_grad_(True); vae.train()
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, weight_decay=0)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (batch,), generator=g)
        with torch.no_grad(): z = vae.encode(x[idx]).latent_dist.sample(generator=g)
        w = 1 + subject_weight * m[idx]
        loss = ((vae.decode(z).sample - x[idx]) ** 2 * w).mean() / w.mean()
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if step % 50 == 0: print(f"decoder step {step}  loss {loss.item():.4f}  {(cpu_seconds() - t0) / 60:.1f} min", flush=True)
    vae.eval()
    with atomic_folder(out) as tmp: vae.save_pretrained(tmp)
    with atomic_path(out/'train_log.json') as tmp:
        tmp.write_text(json.dumps(dict(world=world, steps=steps, batch=batch, lr=lr, subject_weight=subject_weight, seconds=cpu_seconds() - t0)))
    return out

# ---------------------------------------------------------------- measuring with the benchmark's oracle
@torch.no_grad()
def draw(unet, states, pooled, null_s, null_p, seeds, steps: int = 25, guidance: float = 4.0, pool: str = 'eos'):
    "DDIM samples (len(seeds) * N, 4, 16, 16) of each conditioning for each seed, classifier-free guidance `guidance`."
    from diffusers import DDIMScheduler
    sched = DDIMScheduler.from_config(noise_scheduler().config); sched.set_timesteps(steps)
    n = len(states)
    x = torch.cat([torch.randn((n, 4, 16, 16), generator=torch.Generator().manual_seed(1000 + s)) for s in seeds])
    S, P = states.repeat(len(seeds), 1, 1), pooled.repeat(len(seeds), 1)
    cond_s = torch.cat([S, null_s.expand_as(S)]); cond_p = torch.cat([P, null_p.expand_as(P)])
    for t in sched.timesteps:
        e = unet(torch.cat([x, x]), t, cond_s, **added(pooled_of(cond_s, cond_p, pool))).sample
        ec, eu = e.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    return x

@torch.no_grad()
def decode(vae, lat, batch: int = 128) -> np.ndarray:
    out = []
    for i in range(0, len(lat), batch):
        img = vae.decode(lat[i:i + batch] / vae.config.scaling_factor).sample.clamp(-1, 1)
        out.append(((img + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)

def oracle(images: np.ndarray, specs: list) -> list:
    "Per image: category, colour (appearance) and pattern by the benchmark's oracle, each 0 or 1."
    from vb_nb.eval import track_subject, category_accuracy, appearance_accuracy, pattern_accuracy
    track = track_subject(images)
    return [dict(category=category_accuracy([t], s.category), appearance=appearance_accuracy(im, [t], s.colour),
                 pattern=pattern_accuracy(im, [t], s.pattern)) for im, t, s in zip(images, track, specs)]

def summarise(rows: list, seeds) -> dict:
    "Mean over prompts per seed, then mean and spread (std) over seeds, per measure."
    out = {}
    for k in ('category', 'appearance', 'pattern'):
        per = [float(np.mean([r[k] for r in rows if r['seed'] == s])) for s in seeds]
        out[k] = dict(mean=float(np.mean(per)), std=float(np.std(per)), per_seed=per)
    return out

def evaluate(name: str, seeds=(0, 1, 2), n_prompts: int = 24, decoders=('shipped', 'finetuned')):
    "Draw the held-out prompts with each saved UNet of run `name`, decode with each decoder, score; write benchmarks/results/gate/NAME.json."
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from vb_nb.core import outputs_dir, atomic_path
    from vb_nb.eval import benchmark_prompts
    torch.set_num_threads(THREADS)
    out = outputs_dir()/'gate'/name
    log = json.loads((out/'train_log.json').read_text()) if (out/'train_log.json').exists() \
        else dict(config=json.loads((out/'config.json').read_text()), unfinished=True)     # a look at a run still training
    world = log['config']['world']; use_world(world)
    items = benchmark_prompts(n_prompts, 0)
    specs = [it['spec'] for it in items]
    vae, text, tok = frozen_parts()
    vaes = {'shipped': vae}
    fts = [outputs_dir()/'gate'/f'decoder_{w}' for w in (world, 'flat' if WORLDS[world][0] else 'textured', 'textured')]      # the world's own fine-tune, else the textured one's
    ft = next((f for f in fts if (f/'config.json').exists()), None)
    if 'finetuned' in decoders and ft is not None: vaes['finetuned'] = AutoencoderKL.from_pretrained(ft).eval()
    # what the oracle gives the real held-out frames, and their round trip through each VAE: the ceilings
    real = np.stack([_tw.render_clip(s)[0][0] for s in specs])
    ceilings = {'real frames': summarise([dict(r, seed=0) for r in oracle(real, specs)], [0])}
    for k, v in vaes.items():
        ceilings[f'{k} VAE round trip'] = summarise([dict(r, seed=0) for r in oracle(decode(v, encode_frames(vae, real)), specs)], [0])
    res = dict(world=world, train=log, seeds=list(seeds), n_prompts=n_prompts, sampler=dict(sampler='DDIM', steps=25, guidance=4.0),
               decoder=None if ft is None else ft.name, ceilings=ceilings, checkpoints={},
               decoder_log=json.loads((ft/'train_log.json').read_text()) if ft is not None and (ft/'train_log.json').exists() else None)
    prompts = {'text only': [it['prompt'] for it in items], 'appearance in text': [it['description'] for it in items]}
    null_s, null_p = encode_captions(text, tok, [''])
    enc = {k: encode_captions(text, tok, v) for k, v in prompts.items()}
    names = sorted((p.name for p in out.glob('min_*_ema') if p.is_dir()), key=lambda n: float(n.split('_')[1]))
    names += [n.replace('_ema', '_raw') for n in names[-1:]]       # the last one also without the weight average
    last = names[-2] if len(names) > 1 else None
    old = json.loads((RESULTS/f'{name}.json').read_text()) if (RESULTS/f'{name}.json').exists() else {}
    for ckpt in names:
        kept = old.get('checkpoints', {}).get(ckpt)
        if kept is not None and set(kept) == set(vaes) and old.get('decoder') == res['decoder'] and ckpt != last:
            res['checkpoints'][ckpt] = kept; continue         # measured before, with the same decoders
        unet = UNet2DConditionModel.from_pretrained(out/ckpt).eval()
        t0 = time.time()
        r = {}
        for kind, (s, p) in enc.items():
            lat = draw(unet, s, p, null_s, null_p, seeds, pool=log['config'].get('pool', 'eos'))
            for dk, dv in vaes.items():
                rows = [dict(m, seed=sd, prompt=i) for (sd, i), m in zip([(sd, i) for sd in seeds for i in range(n_prompts)],
                                                                         oracle(decode(dv, lat), specs * len(seeds)))]
                r.setdefault(dk, {})[kind] = summarise(rows, seeds)
        res['checkpoints'][ckpt] = r
        if ckpt == last: save_grid(decode(vaes.get('finetuned', vae), lat[:12]), items[:12], rows[:12], RESULTS/f'{name}.png', ckpt)
        g = r.get('finetuned', r['shipped'])
        print(f"{ckpt}: category (text only) {g['text only']['category']['mean']:.2f}, colour (appearance in text) "
              f"{g['appearance in text']['appearance']['mean']:.2f}  [{time.time() - t0:.0f} s]", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with atomic_path(RESULTS/f'{name}.json') as tmp: tmp.write_text(json.dumps(res, indent=1))
    print(f"wrote benchmarks/results/gate/{name}.json")
    return res

# ---------------------------------------------------------------- the motion stage on a candidate base
def image_stage_folder(run: str, ckpt: str) -> Path:
    "A gate run's saved UNet as the image stage writes its result (the UNet, its noise schedule and text layers), for the motion stage to start from."
    import shutil
    from vb_nb.core import outputs_dir, atomic_folder
    from vb_nb.clip import TEXT_LAYERS_FILE
    import vb_nb
    out = outputs_dir()/'gate'/f'{run}_{ckpt}_as_image_stage'
    if not (out/'config.json').exists():
        with atomic_folder(out) as tmp:
            for f in (outputs_dir()/'gate'/run/ckpt).iterdir(): shutil.copyfile(f, tmp/f.name)
            noise_scheduler().save_pretrained(tmp)
            shutil.copyfile(Path(vb_nb.__file__).parent/'assets'/'toy'/'unet'/TEXT_LAYERS_FILE, tmp/TEXT_LAYERS_FILE)
    return out

def train_motion(name: str, run: str, ckpt: str = 'min_30_raw', steps: int = 2400, batch: int = 4, lr: float = 1e-3, n_clips: int = 2000, motion_text: bool = False):
    "Train the motion stage (vb_nb.train, stage 'motion') on a gate run's UNet for `steps` steps, on clips of the run's world (motion_text: with a text path in the motion modules)."
    from vb_nb.core import outputs_dir
    from vb_nb.train import TrainConfig, StageInputs, train_stage
    torch.set_num_threads(THREADS)
    world = json.loads((outputs_dir()/'gate'/run/'train_log.json').read_text())['config']['world']
    flat, factor = WORLDS[world]
    inputs = StageInputs(unet=str(image_stage_folder(run, ckpt)), vae=str(outputs_dir()/'gate'/f'decoder_{world}'), n_clips=n_clips,
                         subject_scale=factor, flat_background=flat)
    cfg = TrainConfig(stage='motion', max_steps=steps, batch_size=batch, lr=lr, checkpoint_every=200, sample_steps=0, motion_text=motion_text, out_dir=str(outputs_dir()/'gate'/name))
    train_stage(cfg, inputs)

def evaluate_motion(name: str, seeds=(0, 1, 2), n_prompts: int = 24, frames: int = 8):
    "Draw the held-out 'text only' prompts as videos with a motion run's base; score category and motion with the benchmark's oracle."
    from vb_nb.core import outputs_dir, atomic_path
    from vb_nb.eval import benchmark_prompts, track_subject, category_accuracy, motion_accuracy
    from vb_nb.train import StageInputs, _motion_model, draw_videos
    from diffusers import UNetMotionModel
    torch.set_num_threads(THREADS)
    out = outputs_dir()/'gate'/name
    summary = json.loads((out/'summary.json').read_text())
    inp = json.loads((out/'training_run.json').read_text())['inputs']
    model = _motion_model(StageInputs(unet=inp['unet'], vae=inp['vae']))
    model.unet = UNetMotionModel.from_pretrained(out/'final'); model.eval()
    use_world(next(w for w, v in WORLDS.items() if v == (inp.get('flat_background', False), inp.get('subject_scale', 1.0))))
    items = benchmark_prompts(n_prompts, 0)
    rows = []
    for sd in seeds:
        for kind in ('prompt', 'description'):
            vids = draw_videos(model, [it[kind] for it in items], frames, seed=1000 + sd)
            for it, v in zip(items, vids):
                tr = track_subject(v)
                rows.append(dict(seed=sd, kind=kind, motion_name=it['spec'].motion, category=category_accuracy(tr, it['spec'].category), motion=motion_accuracy(tr, it['spec'].motion)))
    res = dict(train=dict(steps=summary['steps'], seconds=summary['seconds'], config=summary['config']), seeds=list(seeds), n_prompts=n_prompts, frames=frames)
    for kind, label in (('prompt', 'text only'), ('description', 'appearance in text')):
        for k in ('category', 'motion'):
            per = [float(np.mean([r[k] for r in rows if r['seed'] == s and r['kind'] == kind and r[k] is not None])) for s in seeds]
            res[f'{label}: {k}'] = dict(mean=float(np.mean(per)), std=float(np.std(per)), per_seed=per)
        for group, compound in (('straight', False), ('compound', True)):
            per = [float(np.mean([r['motion'] for r in rows if r['seed'] == s and r['kind'] == kind and r['motion'] is not None
                                  and (', then ' in r['motion_name']) == compound] or [np.nan])) for s in seeds]
            res[f'{label}: motion, {group}'] = dict(mean=float(np.nanmean(per)), per_seed=per)
    from vb_nb.core import portable
    with atomic_path(RESULTS/f'{name}.json') as tmp: tmp.write_text(json.dumps(portable(res), indent=1))   # paths relative to the project
    for k, v in res.items():
        if isinstance(v, dict) and 'mean' in v: print(f"{k}: {v['mean']:.2f}")
    return res

def save_grid(images, items, rows, path, title):
    "A small picture of drawn images (seed 0) with their prompts and the oracle's verdicts."
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axs = plt.subplots(2, 6, figsize=(12, 4.8))
    for ax, im, it, r in zip(axs.flat, images, items, rows):
        ax.imshow(im); ax.axis('off')
        verdict = ('category ok' if r['category'] else 'category wrong') + (', colour ok' if r['appearance'] else ', colour wrong')
        ax.set_title(f"{it['description'][:34]}\n{verdict}", fontsize=6.5)
    fig.suptitle(f"{title}: 'appearance in text' prompts, seed 0", fontsize=9); fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True); fig.savefig(path, dpi=72); plt.close(fig)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    t = sub.add_parser('train'); t.add_argument('--name', required=True); t.add_argument('--world', choices=list(WORLDS), default='textured')
    t.add_argument('--minutes', type=float, default=30); t.add_argument('--clips', type=int, default=4000); t.add_argument('--per-clip', type=int, default=2)
    t.add_argument('--batch', type=int, default=64); t.add_argument('--lr', type=float, default=1e-3); t.add_argument('--save-at', type=float, nargs='+', default=[10, 20, 30])
    t.add_argument('--fresh', action='store_true')
    t.add_argument('--subject-weight', type=float, default=0.0, help="weight the subject's latent cells (1 + this) in the loss")
    t.add_argument('--pool', choices=POOLS, default='eos', help="the caption's pooled state in the time embedding: mean up to the end token, mean of all 77 states, or none")
    t.add_argument('--match', default=None, help='train as many steps as this finished run (same UNet and batch), saving at its steps')
    d = sub.add_parser('decoder'); d.add_argument('--world', choices=list(WORLDS), default='textured'); d.add_argument('--steps', type=int, default=400)
    e = sub.add_parser('eval'); e.add_argument('--name', required=True); e.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    m = sub.add_parser('motion'); m.add_argument('--name', required=True); m.add_argument('--run', required=True); m.add_argument('--ckpt', default='min_30_raw')
    m.add_argument('--steps', type=int, default=2400); m.add_argument('--batch', type=int, default=4); m.add_argument('--clips', type=int, default=2000)
    m.add_argument('--motion-text', action='store_true', help='a text path in the motion modules trains along')
    em = sub.add_parser('eval-motion'); em.add_argument('--name', required=True)
    a = ap.parse_args(argv)
    if a.cmd == 'train':
        train(a.name, a.world, a.minutes, a.clips, a.per_clip, a.batch, a.lr, save_at=a.save_at, fresh=a.fresh, match=a.match, subject_weight=a.subject_weight, pool=a.pool)
    elif a.cmd == 'decoder': finetune_decoder(a.world, a.steps)
    elif a.cmd == 'motion': train_motion(a.name, a.run, a.ckpt, a.steps, a.batch, n_clips=a.clips, motion_text=a.motion_text)
    elif a.cmd == 'eval-motion': evaluate_motion(a.name)
    else: evaluate(a.name, a.seeds)

if __name__ == '__main__': main()
