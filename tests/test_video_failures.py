"Failure injection for video I/O: every broken file gives one clear error naming it."
import numpy as np, pytest
from vb_nb.core import read_video, video_info, write_video, VideoReadError, Video


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
