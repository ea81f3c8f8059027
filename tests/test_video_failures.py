"Failure injection for video I/O: every broken file gives one clear error naming it."
import numpy as np, pytest
from vb_nb.core import read_video, video_info, write_video, VideoReadError, Video, TEMP_PREFIX


@pytest.fixture
def clip(tmp_path):
    v = np.zeros((24, 32, 48, 3), np.uint8)
    for i in range(24): v[i, 8:24, i:i+16] = 255
    return write_video(v, tmp_path/'ok.mp4', fps=12), v


@pytest.mark.parametrize('damage', ['truncate', 'zero_middle', 'empty', 'text', 'missing', 'folder'])
def test_damaged_video_raises_named_error(tmp_path, clip, damage):
    path, _ = clip
    bad = tmp_path/f'{damage}.mp4'
    data = path.read_bytes()
    if damage == 'truncate': bad.write_bytes(data[:len(data)//3])
    elif damage == 'zero_middle': bad.write_bytes(data[:200] + bytes(len(data) - 200))
    elif damage == 'empty': bad.write_bytes(b'')
    elif damage == 'text': bad.write_text('hello')
    elif damage == 'folder': bad.mkdir()
    with pytest.raises(VideoReadError) as e:
        read_video(bad, n=8)
    assert bad.name in str(e.value)


def test_round_trip_and_sampling(clip):
    path, v = clip
    info = video_info(path)
    assert (info.num_frames, info.height, info.width, info.fps) == (24, 32, 48, 12.0)
    got = read_video(path, n=6, window=12, start=6)
    assert got.shape == (6, 32, 48, 3)
    assert np.abs(got.astype(int) - v[6:18:2]).mean() < 4


def test_write_refuses_bad_frames(tmp_path):
    with pytest.raises(ValueError, match='NaN'):
        write_video(np.full((2, 8, 8, 3), np.nan, np.float32), tmp_path/'x.gif')
    with pytest.raises(ValueError, match='shaped'):
        write_video(np.zeros((2, 8, 8, 4), np.uint8), tmp_path/'x.gif')
    with pytest.raises(ValueError, match='mp4 or .gif'):
        Video(np.zeros((2, 8, 8, 3), np.uint8)).save(tmp_path/'x.avi')
    assert list(tmp_path.iterdir()) == []


WRITER = """
import sys, time
from vb_nb.core import atomic_path
with atomic_path(sys.argv[1]) as t:
    t.write_bytes(b'half a video'); print('writing', flush=True); time.sleep(60)
"""


def test_a_killed_write_is_swept_by_the_next_one_and_a_live_one_is_not(tmp_path, clip):
    import os, signal, subprocess, sys
    _, v = clip
    out = tmp_path/'runs'; out.mkdir()
    writers = [subprocess.Popen([sys.executable, '-c', WRITER, str(out/name)], stdout=subprocess.PIPE, text=True) for name in ('dead.mp4', 'live.mp4')]
    try:
        for w in writers: assert w.stdout.readline() == 'writing\n'
        writers[0].send_signal(signal.SIGKILL); writers[0].wait()              # killed mid-write: no cleanup ran
        temps = sorted(p.name for p in out.iterdir())
        assert len(temps) == 2 and all(n.startswith(TEMP_PREFIX) and n.endswith(('.dead.mp4', '.live.mp4')) for n in temps)
        write_video(v, out/'next.mp4')                                           # the next write into the folder
        left = sorted(p.name for p in out.iterdir())
        assert left == sorted([n for n in temps if n.endswith('.live.mp4')] + ['next.mp4']), left   # the live write's temporary stays
    finally:
        for w in writers: w.kill(); w.wait()
