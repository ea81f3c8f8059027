"""Wall time of `generate` with the embedded default model (issue: a default video in <= 10 s on a 2-core CPU).

    python benchmarks/bench_generate.py                 # CPU, defaults (8 frames, 64x64, 25 steps)
    python benchmarks/bench_generate.py --device cuda   # on a GPU
Prints the load time, then per-run wall times (the first run separately: it includes lazy initialisation).
"""
import argparse, os, platform, statistics, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from vb_nb.sample import generate, load_model, example_images

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument('--device', default='cpu'); ap.add_argument('--runs', type=int, default=5)
ap.add_argument('--steps', type=int, default=25); ap.add_argument('--frames', type=int, default=8)
ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch decides)')
a = ap.parse_args()
if a.threads: torch.set_num_threads(a.threads)
t = time.perf_counter(); pipe = load_model(device=a.device); load_s = time.perf_counter() - t
image, prompt = example_images()['red_checkered_star'], 'a star drifts to the left, then up over green grass'
times = []
for i in range(a.runs + 1):
    t = time.perf_counter()
    generate(image, prompt, model=pipe, num_inference_steps=a.steps, num_frames=a.frames, seed=i, refine='director', progress=False)
    if a.device.startswith('cuda'): torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
where = torch.cuda.get_device_name(0) if a.device.startswith('cuda') else f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
print(f"device: {where}; torch {torch.__version__}")
print(f"load: {load_s:.2f} s; first generate: {times[0]:.2f} s")
print(f"generate ({a.frames} frames, 64x64, {a.steps} steps, {a.runs} runs): median {statistics.median(times[1:]):.2f} s, "
      f"min {min(times[1:]):.2f} s, max {max(times[1:]):.2f} s")
