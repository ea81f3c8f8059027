"benchmarks/bench_peers.py: the AnimateDiff + IP-Adapter peer is loaded by diffusers' own loader, is wired into the UNet, and is timed with the others."
import argparse, importlib.util
from pathlib import Path
import numpy as np
import torch
from PIL import Image

SCRIPT = Path(__file__).parents[1]/'benchmarks'/'bench_peers.py'


def load_script():
    spec = importlib.util.spec_from_file_location('bench_peers', SCRIPT)
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_ip_adapter_peer_is_wired_in_and_timed():
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import MultiIPAdapterImageProjection
    from vb_nb.sample import example_images
    mod = load_script()
    torch.set_num_threads(1)
    pipes = mod.build('toy')
    ip, stock = pipes['ip_adapter'], pipes['stock']
    ip_kinds = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0)

    # the loader put diffusers' IP-Adapter processors on every cross-attention layer outside the motion modules, and only there
    cross = {n + '.processor' for n in mod.cross_attention_layers(ip.unet)}
    assert cross, 'the toy UNet has cross-attention layers'
    procs = ip.unet.attn_processors
    assert {n for n, p in procs.items() if isinstance(p, ip_kinds)} == cross
    assert all(p.to_k_ip[0].weight.shape == ip.unet.get_submodule(n[:-len('.processor')]).to_k.weight.shape for n, p in procs.items() if n in cross)
    assert isinstance(ip.unet.encoder_hid_proj, MultiIPAdapterImageProjection) and ip.image_encoder is not None
    assert not any(isinstance(p, ip_kinds) for p in stock.unet.attn_processors.values()), 'the stock UNet is left as it was'

    # the adapter is really in the computation: another image prompt gives another video; at scale 0 it is the stock video
    cfg, images = mod.CONFIGS['toy'], example_images()
    star, ball = (Image.open(images[k]).convert('RGB') for k in ('red_checkered_star', 'orange_dotted_ball'))
    with_star, with_ball = (mod.animatediff(ip, cfg, 2, 0, ip_adapter_image=im) for im in (star, ball))
    plain = mod.animatediff(stock, cfg, 2, 0)
    assert np.abs(with_star - with_ball).max() > 1e-3 and np.abs(with_star - plain).max() > 1e-3
    ip.set_ip_adapter_scale(0.0)
    try: off = mod.animatediff(ip, cfg, 2, 0, ip_adapter_image=star)
    finally: ip.set_ip_adapter_scale(1.0)
    np.testing.assert_allclose(off, plain, atol=1e-4)

    # timed with the others, and reported per step and per video
    res = mod.bench('toy', argparse.Namespace(steps=2, reps=1), pipes)
    assert len(res['seconds']['ip_adapter']['video']) == 1 and res['seconds']['ip_adapter']['step'][0] > 0
    assert set(res['ratios']) == {'vb_default', 'vb_three', 'ip_adapter'} and set(res['ratios']['ip_adapter']) == {'step', 'video'}
    md = mod.markdown([res], dict(device='CPU', torch='', diffusers='', threads=1, command='test'))
    assert '| ip_adapter |' in md
