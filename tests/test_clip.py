"Failure injection for the clip module: interrupted training resumes exactly, corrupt or missing weights give clear errors."
import json, os

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel

import vb_nb.clip as vclip


def small_run(out, ck):
    return vclip.train_toy_clip(steps=4, batch_size=4, n_clips=6, out_dir=out, checkpoint=ck, checkpoint_every=1, progress=False)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    small_run(tmp_path/'straight', tmp_path/'straight.pt')

    real, calls = vclip.clip_pixel_values, {'n': 0}
    def interrupt_on_third_step(*a, **k):
        calls['n'] += 1
        if calls['n'] == 3: raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(vclip, 'clip_pixel_values', interrupt_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path/'resumed', tmp_path/'resumed.pt')
    assert torch.load(tmp_path/'resumed.pt', weights_only=True)['step'] == 2      # the two finished steps were kept
    assert not (tmp_path/'resumed').exists() or not any((tmp_path/'resumed').iterdir())
    monkeypatch.setattr(vclip, 'clip_pixel_values', real)
    small_run(tmp_path/'resumed', tmp_path/'resumed.pt')

    a, b = load_file(tmp_path/'straight'/'model.safetensors'), load_file(tmp_path/'resumed'/'model.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = (json.loads((tmp_path/d/'train_log.json').read_text()) for d in ['straight', 'resumed'])
    assert la == lb and la['step'] == [1, 2, 3, 4]


def test_resume_refuses_other_settings(tmp_path):
    small_run(tmp_path/'out', tmp_path/'ck.pt')
    with pytest.raises(ValueError, match='other settings'):
        vclip.train_toy_clip(steps=4, batch_size=8, n_clips=6, out_dir=tmp_path/'out', checkpoint=tmp_path/'ck.pt', progress=False)


def test_corrupt_weights_name_the_folder(tmp_path):
    CLIPModel(vclip.toy_clip_config(text_layers=1, vision_layers=1)).save_pretrained(tmp_path)
    f = tmp_path/'model.safetensors'
    f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
    for load in [vclip.load_clip_model, vclip.load_text_encoder, vclip.load_image_encoder]:
        with pytest.raises(ValueError, match='corrupt or truncated') as e: load(tmp_path)
        assert str(tmp_path) in str(e.value)


def test_missing_toy_weights_say_how_to_make_them(tmp_path, monkeypatch):
    monkeypatch.setattr(vclip, 'TOY_CLIP_DIR', tmp_path/'toy_clip')
    with pytest.raises(FileNotFoundError, match='--flags slow'): vclip.load_text_encoder()


def test_shipped_assets_are_small_and_load():
    tok_files = {p.name for p in vclip.TOKENIZER_DIR.iterdir()}
    assert tok_files == {'vocab.json', 'merges.txt', 'tokenizer_config.json'}
    size = sum(p.stat().st_size for p in vclip.TOY_CLIP_DIR.iterdir())
    assert size < 7.5 * 2**20, f'toy CLIP assets take {size / 2**20:.1f} MiB'
    model = vclip.load_clip_model()
    assert model.dtype == torch.float32 and not model.training
    assert model.config.text_config.vocab_size == len(vclip.load_tokenizer()) == 49408


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, code_payload):
    (payload, marker), ck = code_payload, tmp_path/'ck.pt'
    torch.save(dict(model=payload, step=1), ck)
    with pytest.raises(ValueError, match='could run code') as e: small_run(tmp_path/'out', ck)
    assert str(ck) in str(e.value) and not marker.exists()
    assert not (tmp_path/'out').exists()
