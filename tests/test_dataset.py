"Dataset build: 50 toyworld clips end to end, interruption and resume, shards, a WebVid-format fixture, the torch Dataset."
import csv, json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from vb_nb import toyworld as tw
from vb_nb import dataset as vd
from vb_nb.core import write_video


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('toyworld')
    tw.make_corpus(root, 50, seed=4, split='train', progress=False)
    return root


@pytest.fixture(scope='module')
def detector():
    torch.set_num_threads(1)
    return vd.load_toy_detector()


def build(corpus, out, detector, **kw):
    return vd.build_dataset(corpus/'train.csv', corpus/'videos', out, detector, truth=corpus/'train_ground_truth.jsonl', progress=False, **kw)


def manifest_text(out): return (Path(out)/'manifest.csv').read_text()


@pytest.fixture(scope='module')
def reference(corpus, detector, tmp_path_factory):
    out = tmp_path_factory.mktemp('ref')
    return out, build(corpus, out, detector)


def test_build_from_50_toyworld_clips(corpus, reference):
    out, s = reference
    assert s['complete'] and s['processed'] == 50 and sum(s['status'].values()) == 50
    rows = vd.read_manifest(out, status=None)
    assert [r['videoid'] for r in rows] == [r['videoid'] for r in tw.read_webvid_csv(corpus/'train.csv')]
    gt = tw.load_ground_truth(corpus)
    ok = [r for r in rows if r['status'] == 'ok']
    assert len(ok) >= 45, s['status']
    for r in ok:
        g = gt[r['videoid']]
        assert r['keyword'] == g['category'] and r['subject'].lower().startswith(g['category'][:3])
        assert r['subject'] in r['caption'] and r['mask_source'] == 'truth'
        assert vd.box_iou_np(r['box'], g['boxes'][r['frame_index']]) >= 0.5
        mj = json.loads((out/r['mask_json']).read_text())
        assert mj[0] == {'value': 0, 'label': 'background'}
        assert {'value', 'label', 'logit', 'box'} <= set(mj[1]) and mj[1]['label'] == r['keyword'] and mj[1]['box'] == r['box']
        p = np.asarray(vd.Image.open(out/r['image_prompt']))
        assert p.shape[0] == p.shape[1] and p.shape[2] == 3
        m = np.asarray(vd.Image.open((out/r['mask_json']).parent/'mask_1.png'))
        assert m.shape == (64, 64) and set(np.unique(m)) <= {0, 255}
    assert not list(Path(out).rglob('.*.*'))               # no temporary files left


def test_injected_failure_then_resume_gives_same_manifest(corpus, detector, reference, tmp_path):
    class Boom(Exception): pass
    seen = []
    def explode(rec):
        seen.append(rec['videoid'])
        if len(seen) == 17: raise Boom()
    with pytest.raises(Boom): build(corpus, tmp_path, detector, on_clip=explode)
    assert not (tmp_path/'manifest.csv').exists()
    assert len(list(tmp_path.rglob('record.json'))) == 17   # the finished clips are on disk
    s = build(corpus, tmp_path, detector)
    assert (s['processed'], s['skipped']) == (33, 17)
    assert manifest_text(tmp_path) == manifest_text(reference[0])


def _cli(corpus, out, *extra):
    return [sys.executable, '-c', 'from vb_nb.dataset import main; main()', '--csv', str(corpus/'train.csv'),
            '--out', str(out), '--truth', str(corpus/'train_ground_truth.jsonl'), '--threads', '1', *extra]


def test_killed_build_then_rerun_gives_same_manifest(corpus, reference, tmp_path):
    out = tmp_path/'ds'
    p = subprocess.Popen(_cli(corpus, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(list(out.rglob('record.json'))) < 12:
        assert p.poll() is None, p.stderr.read().decode()
        assert time.time() - t0 < 120, 'the build did not start'
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    done = len(list(out.rglob('record.json')))
    assert 12 <= done < 50, f'killed too late ({done} clips finished)'
    r = subprocess.run(_cli(corpus, out), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f'skipped {done} finished' in r.stdout
    assert manifest_text(out) == manifest_text(reference[0])


def test_two_shards_in_parallel_merge_into_one_manifest(corpus, reference, tmp_path):
    procs = [subprocess.Popen(_cli(corpus, tmp_path, '--shard', str(i), '--num-shards', '2'), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert manifest_text(tmp_path) == manifest_text(reference[0])


def test_shard_from_env(corpus, detector, tmp_path, monkeypatch):
    monkeypatch.setenv('RANK', '1'); monkeypatch.setenv('WORLD_SIZE', '3')
    s = build(corpus, tmp_path, detector, limit=9)
    assert s['processed'] == 3 and not s['complete'] and s['missing'] == 6
    with pytest.raises(ValueError, match='shard'): build(corpus, tmp_path, detector, shard=3, num_shards=3)


def _webvid_fixture(tmp_path):
    "A tiny CSV in WebVid's exact format (results_*.csv) with its videos in <page_dir>/<videoid>.mp4."
    rows = [('1066676971', 'Dog running on the beach at sunset'), ('1021435342', 'Aerial view of a busy street, 4k'),
            ('31353427', 'Red ball bouncing on a wooden floor. slow motion'), ('1054208285', 'Two Stars twinkle in the night sky'),
            ('1037234567', 'Woman with a cat on a sofa'), ('22222222', 'a dotted box and a dog on the snow')]
    videos = tmp_path/'videos'
    with open(tmp_path/'results_2M_val.csv', 'w', newline='') as f:
        w = csv.writer(f); w.writerow(['videoid', 'contentUrl', 'duration', 'page_dir', 'name'])
        for i, (vid, cap) in enumerate(rows):
            page = '011851_011900' if i % 2 else '000001_000050'
            w.writerow([vid, f'https://ak.picdn.net/shutterstock/videos/{vid}/preview/stock-footage.mp4', 'PT00H00M14S', page, cap])
            if vid == '22222222': continue                         # listed but never downloaded
            spec = tw.random_spec(0, 'train', i)[0]
            write_video(tw.render_clip(spec)[0], videos/page/f'{vid}.mp4')
    return tmp_path/'results_2M_val.csv', videos


def test_real_webvid_csv_with_coco_detector_code_path(tmp_path):
    "The real detector's path: a randomly initialised Faster R-CNN saved to a file and loaded back (nothing downloaded)."
    from torchvision.models.detection import fasterrcnn_resnet50_fpn
    csv_path, videos = _webvid_fixture(tmp_path)
    torch.manual_seed(0)
    torch.save(fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict(), tmp_path/'w.pth')
    det = vd.coco_detector(tmp_path/'w.pth', device='cpu', min_size=96, max_size=96)
    s = vd.build_dataset(csv_path, videos, tmp_path/'ds', det, n_frames=2, progress=False)
    rows = {r['videoid']: r for r in vd.read_manifest(tmp_path/'ds', status=None)}
    assert len(rows) == 6 and s['complete']
    assert rows['1021435342']['status'] == 'no_keyword'                     # "street" holds no "tree"
    assert rows['1054208285']['status'] == 'no_keyword'                     # no COCO word
    assert rows['22222222']['status'] == 'video_error' and 'no video file' in rows['22222222']['reason']
    assert (rows['1066676971']['keyword'], rows['1066676971']['detector_class']) == ('dog', 'dog')
    assert (rows['31353427']['keyword'], rows['31353427']['detector_class']) == ('ball', 'sports ball')
    assert (rows['1037234567']['keyword'], rows['1037234567']['subject']) == ('woman', 'Woman')
    for v in ('1066676971', '31353427', '1037234567'): assert rows[v]['status'] in ('ok', 'no_detection')


def test_webvid_fixture_with_toy_detector_and_corrupt_video(tmp_path, detector):
    csv_path, videos = _webvid_fixture(tmp_path)
    (videos/'011851_011900'/'1054208285.mp4').write_bytes(b'not a video at all')
    s = vd.build_dataset(csv_path, videos, tmp_path/'ds', detector, progress=False)
    rows = {r['videoid']: r for r in vd.read_manifest(tmp_path/'ds', status=None)}
    assert rows['1054208285']['status'] == 'video_error' and rows['1054208285']['subject'] == 'Stars'
    assert rows['22222222']['status'] == 'video_error' and rows['1066676971']['status'] == 'no_keyword'
    # the download completes: --retry-failed redoes the failed clips only
    write_video(tw.render_clip(tw.random_spec(0, 'train', 3)[0])[0], videos/'011851_011900'/'1054208285.mp4')
    s = vd.build_dataset(csv_path, videos, tmp_path/'ds', detector, progress=False, retry_failed=True)
    assert s['processed'] == 2
    assert vd.read_manifest(tmp_path/'ds', status=None)[3]['status'] != 'video_error'


def test_torch_dataset(reference):
    out, _ = reference
    ds = vd.VideoPromptDataset(out, n_frames=8, size=32, window=16, clip_size=48, clip_mean=[0.5] * 3, clip_std=[0.5] * 3, shrink_p=1.0)
    it = ds[0]
    assert it['pixel_values'].shape == (8, 3, 32, 32) and it['pixel_values'].dtype == torch.float32
    assert -1 <= it['pixel_values'].min() and it['pixel_values'].max() <= 1
    assert it['clip_pixel_values'].shape == (3, 48, 48) and it['vae_pixel_values'].shape == (3, 32, 32)
    assert it['clip_pixel_values'].abs().max() <= 1.0 + 1e-5                    # mean/std 0.5 map [0, 1] onto [-1, 1]
    assert it['subject'] in it['caption'] and it['keyword'] in tw.CATEGORIES
    ds_plain = vd.VideoPromptDataset(out, n_frames=4, size=64, clip_size=64, augment=False)
    a, b = ds_plain[2], ds_plain[2]
    assert torch.equal(a['pixel_values'], b['pixel_values']) and torch.equal(a['clip_pixel_values'], b['clip_pixel_values'])
    with pytest.raises(FileNotFoundError, match='manifest'): vd.VideoPromptDataset(out/'nope')


def test_bad_input_is_named(corpus, detector, tmp_path):
    with pytest.raises(FileNotFoundError, match='videos folder'):
        vd.build_dataset(corpus/'train.csv', tmp_path/'nope', tmp_path/'ds', detector, progress=False)
    bad = tmp_path/'bad.csv'; bad.write_text('id,caption\n1,a dog\n')
    with pytest.raises(ValueError, match='missing column'):
        vd.build_dataset(bad, corpus/'videos', tmp_path/'ds', detector, progress=False)
    with pytest.raises(FileNotFoundError, match='toy detector'): vd.load_toy_detector(tmp_path/'none.safetensors')
    r = subprocess.run([sys.executable, '-c', 'from vb_nb.dataset import main; main()', '--csv', str(bad), '--out', str(tmp_path/'x'),
                        '--videos', str(corpus/'videos')], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'missing column' in r.stderr


# --- hostile and broken input -------------------------------------------------------------------------------------------
def test_a_detector_checkpoint_that_would_run_code_is_refused(tmp_path, code_payload):
    (payload, marker), ck = code_payload, tmp_path/'detector.pt'
    torch.save(dict(model=payload, step=1), ck)
    frames, boxes, labels = np.zeros((2, 64, 64, 3), np.uint8), np.array([[8, 8, 30, 30]] * 2, np.float32), np.array([1, 1])
    with pytest.raises(ValueError, match='could run code'):
        vd.train_toy_detector(vd.toy_detector_model(), frames, boxes, labels, steps=1, checkpoint=ck, progress=False)
    assert not marker.exists()


def _dataset_cli(csv_path, out, *extra, videos=None):
    args = [sys.executable, '-c', 'from vb_nb.dataset import main; main()', '--csv', str(csv_path), '--out', str(out), '--threads', '1']
    return subprocess.run(args + (['--videos', str(videos)] if videos else []) + list(extra), capture_output=True, text=True, timeout=300)


def test_ids_from_the_csv_never_leave_the_roots(corpus, detector, tmp_path):
    root = tmp_path/'a'/'b'/'c'/'d'
    (root/'videos').mkdir(parents=True)
    outside = tmp_path/'outside.mp4'; outside.write_bytes(next((corpus/'videos').rglob('*.mp4')).read_bytes())
    row = tw.read_webvid_csv(corpus/'train.csv')[0]
    def evil_csv(vid, page):
        with open(tmp_path/'evil.csv', 'w', newline='') as f:
            w = csv.DictWriter(f, tw.WEBVID_COLUMNS); w.writeheader(); w.writerow({**row, 'videoid': vid, 'page_dir': page})
        return tmp_path/'evil.csv'
    r = _dataset_cli(evil_csv('../../../../etc', 'p'), root/'ds', videos=root/'videos')        # the command line ...
    assert r.returncode == 2 and "evil.csv, line 2: videoid '../../../../etc' is not a plain file name" in r.stderr, r.stderr
    assert 'Traceback' not in r.stderr
    for vid, page in [('1', '../../../..'), ('../../../../../outside', ''), ('..', 'p')]:              # ... and the library
        with pytest.raises(ValueError, match='evil.csv, line 2: .* is not a plain file name'):
            vd.build_dataset(evil_csv(vid, page), root/'videos', root/'ds', detector, progress=False)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob('*')) == [
        'a', 'a/b', 'a/b/c', 'a/b/c/d', 'a/b/c/d/videos', 'evil.csv', 'outside.mp4']              # nothing written anywhere
    with pytest.raises(ValueError, match='not a plain file name'):                                 # nor read
        vd.find_video(root/'videos', {'videoid': '../../../../../outside', 'page_dir': ''})


def test_broken_csv_and_truth_files_are_named(corpus, detector, tmp_path):
    lines = (corpus/'train.csv').read_text().splitlines(keepends=True)
    i = lines[3].rindex(','); (tmp_path/'quote.csv').write_text(''.join(lines[:3] + [lines[3][:i + 1] + '"' + lines[3][i + 1:]] + lines[4:]))
    (tmp_path/'latin1.csv').write_bytes(''.join(lines[:5] + [lines[5].replace(',', ',café ', 1)] + lines[6:]).encode('latin-1'))
    (tmp_path/'truth.jsonl').write_text('this is not json\n')
    for csv_path, says in [(tmp_path/'quote.csv', ['quote.csv, line 4: ', 'quote']), (tmp_path/'latin1.csv', ['latin1.csv, line 6: not UTF-8'])]:
        r = _dataset_cli(csv_path, tmp_path/'ds', videos=corpus/'videos')
        assert r.returncode == 2 and all(x in r.stderr for x in says) and 'Traceback' not in r.stderr, r.stderr
        assert not (tmp_path/'ds'/'clips').exists()
    with pytest.raises(ValueError, match='truth.jsonl, line 1: not JSON'):
        vd.build_dataset(corpus/'train.csv', corpus/'videos', tmp_path/'ds', detector, truth=tmp_path/'truth.jsonl', progress=False)


def test_a_manifest_path_leading_outside_is_refused(reference, tmp_path):
    import shutil
    out = tmp_path/'ds'; shutil.copytree(reference[0], out)
    text = (out/'manifest.csv').read_text()
    rows = vd.read_manifest(out)
    (out/'manifest.csv').write_text(text.replace(rows[0]['image_prompt'], '../../../../etc/passwd', 1))
    with pytest.raises(ValueError, match='leads outside its folder'): vd.VideoPromptDataset(out)


def _copy(reference, tmp_path):
    import shutil
    out = tmp_path/'ds'; shutil.copytree(reference[0], out)
    return out


def test_a_manifest_missing_a_column_or_a_folder_in_its_place_is_named(corpus, detector, reference, tmp_path):
    out = _copy(reference, tmp_path)
    with open(out/'manifest.csv', newline='') as f: rows = list(csv.DictReader(f))
    with open(out/'manifest.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, [c for c in rows[0] if c != 'image_prompt']); w.writeheader()
        for r in rows: w.writerow({k: v for k, v in r.items() if k != 'image_prompt'})
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['image_prompt'\]"): vd.VideoPromptDataset(out)
    (out/'manifest.csv').unlink(); (out/'manifest.csv').mkdir()
    with pytest.raises(ValueError, match='is not a file'): vd.VideoPromptDataset(out)
    (tmp_path/'ds2'/'manifest.csv').mkdir(parents=True); seen = []      # the build says so before processing any clip
    with pytest.raises(ValueError, match='manifest.csv must be a file'):
        vd.build_dataset(corpus/'train.csv', corpus/'videos', tmp_path/'ds2', detector, progress=False, on_clip=seen.append)
    assert seen == [] and not (tmp_path/'ds2'/'clips').exists()


def test_a_clip_listed_twice_is_named(corpus, detector, tmp_path):
    lines = (corpus/'train.csv').read_text().splitlines(keepends=True)
    (tmp_path/'dup.csv').write_text(''.join(lines[:4] + [lines[2]] + lines[4:6]))
    with pytest.raises(ValueError, match=r'dup.csv, line 5: video .* is already on line 3'):
        vd.build_dataset(tmp_path/'dup.csv', corpus/'videos', tmp_path/'ds', detector, progress=False)
    assert not (tmp_path/'ds'/'clips').exists()


def test_a_video_with_huge_frames_is_refused_before_decoding(tmp_path):
    from vb_nb.core import VideoReadError, video_info, read_video
    write_video(np.zeros((2, 4096, 4096, 3), np.uint8), tmp_path/'bomb.mp4')
    assert (tmp_path/'bomb.mp4').stat().st_size < 200_000                # a small file ...
    for read in (video_info, lambda p: read_video(p, n=2)):               # ... whose frames would take gigabytes to decode and resize
        with pytest.raises(VideoReadError, match='4096 x 4096 pixels'): read(tmp_path/'bomb.mp4')


def test_a_decompression_bomb_image_prompt_is_skipped_not_fatal(reference, tmp_path):
    import struct, zlib
    from vb_nb.train import UNREADABLE, random_batch
    out = _copy(reference, tmp_path)
    ds = vd.VideoPromptDataset(out, n_frames=2, size=32, clip_size=32)
    png = bytearray((out/ds.rows[0]['image_prompt']).read_bytes())
    png[16:24] = struct.pack('>II', 30000, 30000); png[29:33] = struct.pack('>I', zlib.crc32(bytes(png[12:29])))
    (out/ds.rows[0]['image_prompt']).write_bytes(bytes(png))
    with pytest.raises(UNREADABLE, match='too large'): ds[0]
    skip = {}
    torch.manual_seed(0); b = random_batch(ds, 4, skip)                   # training skips the clip and goes on
    assert len(b['caption']) == 4 and (not skip or set(skip) == {0})


def test_a_symlink_in_clips_does_not_lead_outside(reference, tmp_path):
    from vb_nb.train import UNREADABLE
    out = _copy(reference, tmp_path)
    ds = vd.VideoPromptDataset(out, n_frames=2, size=32, clip_size=32)
    folder = (out/ds.rows[0]['image_prompt']).parent
    secret = tmp_path/'secret'; secret.mkdir(); (secret/'image_prompt.png').write_bytes((folder/'image_prompt.png').read_bytes())
    import shutil; shutil.rmtree(folder); folder.symlink_to(secret, target_is_directory=True)
    with pytest.raises(UNREADABLE, match='leads outside'): ds[0]
    ds[1]                                                                  # the others read as before
