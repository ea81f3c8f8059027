"Toyworld corpus: determinism, the WebVid shape, held-out appearances, resuming, and the command line."
import csv, json, re, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from vb_nb import toyworld as tw
from vb_nb.core import read_video, video_info


def test_render_is_deterministic_and_boxes_match_masks():
    spec, _ = tw.random_spec(7, 'train', 3)
    f1, b1, m1 = tw.render_clip(spec)
    f2, b2, m2 = tw.render_clip(tw.ClipSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))
    assert (f1 == f2).all() and (b1 == b2).all() and (m1 == m2).all()
    assert (tw.masks_to_boxes(m1) == b1).all()
    # the subject's pixels carry its colour family: the mask's mean colour is far from the background's
    bg = tw.render_background(spec.background, spec.height, spec.width, spec.bg_seed)
    assert np.abs(f1[0][m1[0]].mean(0) - bg[m1[0]].mean(0)).max() > 20


@pytest.mark.parametrize('motion,axis,sign', [('left', 0, -1), ('right', 0, 1), ('up', 1, -1), ('down', 1, 1)])
def test_translations_move_the_box_the_named_way(motion, axis, sign):
    spec = tw.ClipSpec('ball', 'red', 'solid', 'snow', motion, x0=0.5, y0=0.5, radius=0.12)
    _, boxes, _ = tw.render_clip(spec)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    step = np.diff(centre[:, axis])
    assert (np.sign(step[np.abs(step) > 0]) == sign).all() and abs(centre[-1, axis] - centre[0, axis]) > 20
    assert np.abs(centre[:, 1 - axis] - centre[0, 1 - axis]).max() <= 1


def test_grow_shrink_spin_bounce():
    area = lambda m: m.sum((1, 2))
    assert area(tw.render_clip(tw.ClipSpec('box', 'blue', 'solid', 'sand', 'grow', radius=0.1))[2])[-1] > 3 * area(tw.render_clip(tw.ClipSpec('box', 'blue', 'solid', 'sand', 'grow', radius=0.1))[2])[0]
    m = tw.render_clip(tw.ClipSpec('box', 'blue', 'solid', 'sand', 'shrink', radius=0.25))[2]
    assert area(m)[-1] < area(m)[0] / 3
    m = tw.render_clip(tw.ClipSpec('box', 'blue', 'solid', 'sand', 'spin', radius=0.25, n_frames=4))[2]
    assert (m[0] != m[3]).sum() > 50 and abs(int(area(m)[0]) - int(area(m)[3])) < 0.1 * area(m)[0]   # turned, same size
    _, b, _ = tw.render_clip(tw.ClipSpec('ball', 'blue', 'solid', 'sand', 'bounce', y0=0.7, radius=0.12))
    top = b[:, 1]
    assert top.min() < top[0] - 8 and abs(top[-1] - top[0]) <= 1                     # up and back down


def test_every_random_clip_stays_in_frame_and_heldout_is_respected():
    for i in range(60):
        for split in ('train', 'heldout'):
            spec, cap = tw.random_spec(11, split, i)
            assert tw.is_heldout(*spec.appearance) == (split == 'heldout')
            assert re.search(rf'\b{spec.category}\b', cap) and spec.colour in cap
            _, b, m = tw.render_clip(spec)
            assert m.any((1, 2)).all()
            assert not (m[:, 0].any() or m[:, -1].any() or m[:, :, 0].any() or m[:, :, -1].any()), (split, i)


def test_compound_motion_segments_in_ground_truth(tmp_path):
    tw.make_corpus(tmp_path, 40, seed=2, progress=False)
    gt = tw.load_ground_truth(tmp_path)
    compound = [r for r in gt.values() if len(r['segments']) == 2]
    assert compound, 'a third of the clips should have compound motions'
    for r in compound:
        a, b = r['segments']
        assert r['motion'] == f"{a['motion']}, then {b['motion']}" and a['end'] == b['start'] == 12 and b['end'] == 24
        assert ', then ' in r['caption']


def test_corpus_files_are_webvid_shaped_and_resume(tmp_path):
    out = tmp_path/'tw'
    csv_path = tw.make_corpus(out, 8, seed=5, split='heldout', progress=False)
    assert csv_path == out/'heldout.csv'
    with open(csv_path, newline='') as f: rows = list(csv.DictReader(f))
    assert list(rows[0]) == ['videoid', 'contentUrl', 'duration', 'page_dir', 'name'] and len(rows) == 8
    assert all(r['videoid'].isdigit() and r['duration'] == 'PT00H00M03S' for r in rows)
    gt = tw.load_ground_truth(out, 'heldout')
    for r in rows:
        path = out/'videos'/r['page_dir']/f"{r['videoid']}.mp4"
        assert (out/r['contentUrl']) == path and path.exists()
        assert gt[r['videoid']]['caption'] == r['name'] and gt[r['videoid']]['heldout']
    info = video_info(out/rows[0]['contentUrl'])
    assert (info.num_frames, info.height, info.width) == (24, 64, 64)
    # delete one video and a re-run recreates only that one; the CSV is identical
    victim = out/rows[3]['contentUrl']; victim.unlink()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob('*.mp4')}
    tw.make_corpus(out, 8, seed=5, split='heldout', progress=False)
    assert victim.exists() and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    with open(csv_path, newline='') as f: assert list(csv.DictReader(f)) == rows
    frames = read_video(victim)
    ref = tw.render_clip(tw.ClipSpec.from_dict(gt[rows[3]['videoid']]['spec']))[0]
    assert np.abs(frames.astype(int) - ref).mean() < 6
    assert not list(out.rglob('.*'))                 # no temporary files left behind


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='dog'): tw.ClipSpec('dog', 'red', 'solid', 'grass')
    with pytest.raises(ValueError, match='sideways'): tw.ClipSpec('ball', 'red', 'solid', 'grass', ('left', 'sideways'))
    with pytest.raises(ValueError, match='split'): tw.random_spec(0, 'test')
    with pytest.raises(FileNotFoundError, match='make_corpus'): tw.load_ground_truth('/nonexistent')


def test_cli(tmp_path):
    exe = shutil.which('vb_nb_toyworld')
    cmd = [exe] if exe else [sys.executable, '-c', 'from vb_nb.toyworld import main; main()']
    r = subprocess.run([*cmd, '--n', '6', '--seed', '1', '--out', str(tmp_path), '--split', 'val'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'val.csv').exists() and len(list(tmp_path.rglob('*.mp4'))) == 6
    r = subprocess.run([*cmd, '--n', '0', '--out', str(tmp_path/'x')], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'n must be' in r.stderr
