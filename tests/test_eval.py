"Tests of vb_nb.eval outside the notebook: CLIP-Score against a plain reference, the toyworld measurements, the benchmark and its command line."
import dataclasses, json
import numpy as np
import pytest
import torch
from transformers import CLIPModel

from vb_nb import toyworld as tw
from vb_nb.clip import toy_clip_config, load_tokenizer, clip_image_processor, clip_pixel_values, tokenize
from vb_nb.eval import (_features, clip_score, clip_image_score, temporal_consistency, real_clip, toy_measurements,
                        run_benchmark, default_systems, main, BENCHMARK_METRICS)


@pytest.fixture(scope='module')
def tiny_clip_dir(tmp_path_factory):
    "A tiny CLIPModel saved like a clip-vit-base-patch32 folder (config, weights, tokenizer, preprocessing)."
    torch.manual_seed(5)
    m = CLIPModel(toy_clip_config(width=32, text_layers=1, vision_layers=1)).eval()
    d = tmp_path_factory.mktemp('tiny_clip')
    m.save_pretrained(d); load_tokenizer().save_pretrained(d); clip_image_processor(64).save_pretrained(d)
    return d, m


@pytest.fixture(scope='module')
def frames():
    return np.concatenate([tw.render_clip(tw.random_spec(0, 'heldout', i)[0])[0][::6] for i in range(4)])


def _unit(x): return torch.nn.functional.normalize(_features(x), dim=-1)


@torch.no_grad()
def test_clip_score_matches_reference(tiny_clip_dir, frames):
    d, m = tiny_clip_dir
    img = _unit(m.get_image_features(pixel_values=clip_pixel_values(frames, 64)))
    for text in ('a red ball rolls to the left', 'a green star'):
        txt = _unit(m.get_text_features(input_ids=tokenize(load_tokenizer(), [text])))
        ref = (100 * img @ txt.T).clamp(min=0).mean().item()
        assert clip_score(frames, text, str(d)) == pytest.approx(ref, abs=1e-3)
        assert clip_score(frames, text, m) == pytest.approx(ref, abs=1e-3)
    cos = 100 * img @ txt.T                                 # 'a green star': mixed signs, clamped per frame
    assert (cos < 0).any() and (cos > 0).any()
    ref_i = (100 * img @ img[:1].T).clamp(min=0).mean().item()
    assert clip_image_score(frames, frames[0], str(d)) == pytest.approx(ref_i, abs=1e-3)
    ref_t = (100 * (img[:-1] * img[1:]).sum(-1)).clamp(min=0).mean().item()
    assert temporal_consistency(frames, str(d)) == pytest.approx(ref_t, abs=1e-3)


def test_clip_score_bad_input(tiny_clip_dir, frames):
    d, m = tiny_clip_dir
    with pytest.raises(ValueError, match='non-empty'): clip_score(frames, '', m)
    with pytest.raises(ValueError, match='uint8'): clip_score(frames.astype(np.float32), 'a ball', m)
    with pytest.raises(ValueError, match='2 frames'): temporal_consistency(frames[:1], m)
    with pytest.raises(FileNotFoundError): clip_score(frames, 'a ball', str(d / 'nope'))


def test_toy_measurements_real_and_wrong():
    specs = [tw.random_spec(0, 'heldout', i)[0] for i in range(8)]
    measure = lambda frames, s: toy_measurements(frames, s.category, s.colour, s.motion, pattern=s.pattern)
    real = [measure(real_clip(s), s) for s in specs]
    rev = [measure(real_clip(s)[::-1].copy(), s) for s in specs]
    rec = [measure(real_clip(s)[..., [1, 2, 0]].copy(), s) for s in specs]
    swapped = [measure(real_clip(dataclasses.replace(s, pattern='dotted' if s.pattern == 'solid' else 'solid')), s) for s in specs]
    mean = lambda rows, k: np.mean([r[k] for r in rows if r[k] is not None])
    assert mean(real, 'category') >= 0.8 and mean(real, 'appearance') >= 0.9 and mean(real, 'motion') >= 0.9 and mean(real, 'pattern') >= 0.9
    assert mean(rev, 'motion') < 0.3
    assert mean(rec, 'appearance') < 0.2
    assert mean(swapped, 'pattern') < 0.2
    assert toy_measurements(real_clip(specs[0]), specs[0].category, specs[0].colour, specs[0].motion)['pattern'] is None


def test_quick_benchmark_resumes(tiny_clip_dir, tmp_path, monkeypatch):
    from vb_nb.model import VideoBooth
    import vb_nb.sample
    d, _ = tiny_clip_dir
    systems = {k: v for k, v in default_systems().items() if k in ('real', 'base / text only', 'full')}
    res = run_benchmark(n_prompts=2, seeds=[0], systems=systems, model=VideoBooth.toy(), steps=1, evaluator=str(d), out_dir=tmp_path, progress=False)
    assert json.loads((tmp_path / 'results.json').read_text()) == res
    assert res['config']['n_prompts'] == 2 and res['config']['seeds'] == [0]
    assert set(res['systems']) == set(systems) and set(res['systems']['full']) == set(BENCHMARK_METRICS)
    assert res['systems']['real']['category']['mean'] >= 0.5
    md = (tmp_path / 'results.md').read_text()
    assert all(f'| {name} |' in md for name in systems)
    n_rows = len((tmp_path / 'rows.jsonl').read_text().splitlines())
    assert n_rows == 2 * 3
    def boom(*a, **k): raise AssertionError('a finished video was generated again')
    monkeypatch.setattr(vb_nb.sample, 'generate', boom)
    assert run_benchmark(n_prompts=2, seeds=[0], systems=systems, model=VideoBooth.toy(), steps=1, evaluator=str(d),
                         out_dir=tmp_path, progress=False) == res


def test_benchmark_measures_a_retrained_adapter_afresh(tiny_clip_dir, tmp_path, monkeypatch):
    from vb_nb.model import VideoBooth
    import vb_nb.sample
    d, _ = tiny_clip_dir
    model, adapter = VideoBooth.toy(), tmp_path / 'adapter'
    model.adapter.save_pretrained(adapter)
    systems = {'variant': (str(adapter), {})}
    bench = lambda: run_benchmark(n_prompts=1, seeds=[0], systems=systems, model=model, steps=1, evaluator=str(d),
                                  out_dir=tmp_path / 'bench', progress=False)
    first = bench()
    assert first['config']['fingerprints']['variant'][1] is not None
    VideoBooth.toy(seed=1).adapter.save_pretrained(adapter)          # "retrained": same folder, other weights
    calls = []
    real_generate = vb_nb.sample.generate
    monkeypatch.setattr(vb_nb.sample, 'generate', lambda *a, **k: calls.append(1) or real_generate(*a, **k))
    second = bench()
    assert calls == [1], 'the cached row of the old adapter was reused'
    assert second['config']['fingerprints']['variant'] != first['config']['fingerprints']['variant']
    assert len((tmp_path / 'bench' / 'rows.jsonl').read_text().splitlines()) == 2


def test_cli(tiny_clip_dir, tmp_path, capsys):
    d, _ = tiny_clip_dir
    main(['--systems', 'real', '--prompts', '2', '--seeds', '0', '1', '--evaluator', str(d), '--out', str(tmp_path)])
    res = json.loads((tmp_path / 'results.json').read_text())
    assert res['systems']['real']['motion']['std'] == 0.0 and res['config']['seeds'] == [0, 1]
    assert '| real |' in capsys.readouterr().out
    with pytest.raises(SystemExit): main(['--systems', 'nonsense', '--out', str(tmp_path)])
    for flag in ('--joint', '--coarse', '--input-splice', '--output-splice', '--no-posenc-trained'):
        with pytest.raises(SystemExit): main([flag, str(tmp_path / 'missing'), '--out', str(tmp_path)])
