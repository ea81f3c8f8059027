"The local transformers backend with a tiny random causal LM saved to a temporary folder, and the fallback on its gibberish."
import pytest
import torch

from vb_nb.prompts import (LLMError, PromptFallbackWarning, TransformersBackend, decompose, decompose_messages, make_backend,
                           plan_prompts, refine, refine_messages, save_tiny_causal_lm)

CAPTION = "a striped orange star drifts to the left, then rises over green grass"


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    return save_tiny_causal_lm(tmp_path_factory.mktemp('llm') / 'tiny', words=['star', 'drifts', 'rises'])


@pytest.fixture(scope='module')
def llm(model_dir):
    return TransformersBackend(model_dir, max_new_tokens=24)


def test_loads_from_the_folder_and_answers_deterministically(llm):
    msgs = decompose_messages(CAPTION, 'star', 8)
    a = llm.complete(msgs)
    assert isinstance(a, str) and a and a == llm.complete(msgs)
    ids = llm.encode(msgs)['input_ids'][0].tolist()
    assert llm.tokenizer.decode(ids).rstrip().endswith('assistant :')           # the chat template's generation prompt


def test_gibberish_falls_back_with_a_warning(llm):
    with pytest.warns(PromptFallbackWarning, match='transformers:tiny'):
        assert decompose(CAPTION, 'star', 8, llm) == [CAPTION]
    with pytest.warns(PromptFallbackWarning, match='transformers:tiny'):
        assert refine(CAPTION, 'star', llm) == CAPTION
    with pytest.warns(PromptFallbackWarning):
        plan = plan_prompts(CAPTION, 'star', 8, refine=llm)
    assert plan.prompts == [CAPTION] and plan.source == 'original' and plan.fallback


def test_without_a_chat_template_uses_a_transcript(tmp_path):
    b = TransformersBackend(save_tiny_causal_lm(tmp_path / 'plain', chat_template=False), max_new_tokens=8)
    text = b.tokenizer.decode(b.encode(refine_messages('a red ball', 'ball'))['input_ids'][0])
    assert text.startswith('System :') and text.rstrip().endswith('Assistant :')
    assert isinstance(b.complete(refine_messages('a red ball', 'ball')), str)


def test_seeded_sampling_is_repeatable_and_leaves_global_rng_alone(model_dir):
    b = TransformersBackend(model_dir, max_new_tokens=12, do_sample=True, seed=3)
    msgs = refine_messages('a red ball', 'ball')
    torch.manual_seed(1); expected = torch.rand(3)
    torch.manual_seed(1); first = b.complete(msgs); after = torch.rand(3)
    assert torch.equal(after, expected) and b.complete(msgs) == first
    others = {TransformersBackend(model_dir, max_new_tokens=12, do_sample=True, seed=s).complete(msgs) for s in range(4)}
    assert len(others) > 1                                                       # the seed matters


def test_request_longer_than_the_context(tmp_path):
    b = TransformersBackend(save_tiny_causal_lm(tmp_path / 'short', n_positions=64), max_new_tokens=8)
    with pytest.raises(LLMError, match='reads at most 64'): b.complete(decompose_messages(CAPTION, 'star', 8))
    with pytest.warns(PromptFallbackWarning, match='reads at most 64'):
        assert decompose(CAPTION, 'star', 8, b) == [CAPTION]


def test_folder_spec_and_errors(model_dir, tmp_path):
    assert isinstance(make_backend(str(model_dir), max_new_tokens=4), TransformersBackend)
    with pytest.raises(FileNotFoundError, match='config.json'): TransformersBackend(tmp_path)
    with pytest.raises(ValueError, match='cannot make a prompt backend'): make_backend(str(tmp_path / 'missing'))


LOOPING_TEMPLATE = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"

def _looping_model(tmp_path):
    from transformers import AutoTokenizer
    path = save_tiny_causal_lm(tmp_path/'loops', words=['star'])
    tok = AutoTokenizer.from_pretrained(path); tok.chat_template = LOOPING_TEMPLATE; tok.save_pretrained(path)
    return path


def test_a_chat_template_that_loops_for_ever_is_stopped_by_the_deadline(tmp_path):
    import time
    b = make_backend(_looping_model(tmp_path), timeout=2, max_new_tokens=4)
    t = time.monotonic()
    with pytest.raises(LLMError, match='no answer within 2 s'): b.complete(refine_messages(CAPTION, 'star'))
    assert time.monotonic() - t < 30
    with pytest.warns(PromptFallbackWarning, match='chat template'): assert refine(CAPTION, 'star', b) == CAPTION
    assert time.monotonic() - t < 60

