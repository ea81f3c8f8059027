"""Speed of the dataset build on this CPU: toyworld clips through keyword filter, decoding, the shipped toy
Faster R-CNN, best box, image prompt and record writing. Prints clips per second.

    python benchmarks/bench_dataset.py [--clips 200] [--threads 1] [--frames 4]
"""
import argparse, tempfile, time
from pathlib import Path

import torch

from vb_nb import toyworld as tw
from vb_nb import dataset as vd


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--clips', type=int, default=200)
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    ap.add_argument('--frames', type=int, default=4, help='frames decoded and detected per clip')
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t = time.perf_counter(); tw.make_corpus(d/'tw', a.clips, seed=0, progress=False); t_corpus = time.perf_counter() - t
        det = vd.load_toy_detector()
        kw = dict(truth=d/'tw'/'train_ground_truth.jsonl', n_frames=a.frames, progress=False)
        t = time.perf_counter(); s = vd.build_dataset(d/'tw'/'train.csv', d/'tw'/'videos', d/'ds', det, **kw); t_build = time.perf_counter() - t
        t = time.perf_counter(); vd.build_dataset(d/'tw'/'train.csv', d/'tw'/'videos', d/'ds', det, **kw); t_resume = time.perf_counter() - t
        ds = vd.VideoPromptDataset(d/'ds', n_frames=8, size=64, clip_size=64)
        n = min(len(ds), 100)
        t = time.perf_counter(); [ds[i] for i in range(n)]; t_items = time.perf_counter() - t
    print(f"torch threads: {a.threads}; {a.clips} toyworld clips (64x64, 24 frames), {a.frames} frames detected per clip")
    print(f"toyworld generation: {a.clips / t_corpus:.1f} clips/s")
    print(f"dataset build:       {a.clips / t_build:.1f} clips/s ({t_build:.1f} s; status {s['status']})")
    print(f"resume (all done):   {a.clips / t_resume:.0f} clips/s checked")
    print(f"torch Dataset:       {n / t_items:.1f} items/s (8 frames, augmented prompt)")


if __name__ == '__main__':
    main()
