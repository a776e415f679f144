"""Client and cards against a real qkvshared on the bundled stories260K model."""
import numpy as np
import pytest

from conftest import INPUT, MAX_CARD_BYTES, MODEL_DIR
from qkvshare import client as cl
from qkvshare.codec import Card, write_card
from qkvshare.errors import (CardError, FailedPrecondition, InvalidArgument,
                             NotFound, ResourceExhausted, RpcError)
from qkvshare.fingerprint import model_fingerprint_hex


def hop_card_ids(events):
    return {e.hop: e.card_id for e in events if isinstance(e, cl.CardBuilt)}


def python_card(client, story_runs, mode, bits):
    """(the daemon's exported full hop-0 card of story_full, a card of the same
    K/V written in Python: full, or uniform `bits`)."""
    _, events = story_runs["story_full"]
    full = client.cards.export(hop_card_ids(events)[0])
    kv = full.kv()
    kw = {"mode": "full"} if mode == "full" else {"bits": bits}
    return full, write_card(kv[:, 0], kv[:, 1], full.token_ids, model_fingerprint_hex(MODEL_DIR),
                            source_agent="pytest", **kw)


def test_status_agents_workflows(client):
    st = client.status()
    assert st.state == "serving" and st.agents == 3
    fps = {a.fingerprint for a in client.agents()}
    assert fps == {model_fingerprint_hex(MODEL_DIR)}  # Python computes the daemon's fingerprint
    assert {"story", "story_full", "story_u4"} <= {w.name for w in client.workflows()}


def test_submit_watch_get(client, story_runs):
    task, events = story_runs["story"]
    assert client.state_name(task) == "finished" and task.num_hops == 3
    kinds = [type(e).__name__ for e in events]
    assert kinds[-1] == "TaskEnded" and events[-1].state == "finished"
    assert [e.seq for e in events] == list(range(len(events)))
    assert kinds.count("HopStarted") == 3 and kinds.count("HopFinished") == 3
    for hop in range(3):
        text = "".join(e.text for e in events if isinstance(e, cl.Token) and e.hop == hop)
        assert text == task.hops[hop].output
        n = sum(1 for e in events if isinstance(e, cl.Token) and e.hop == hop)
        assert n == task.hops[hop].generated_tokens > 0
    built = [e for e in events if isinstance(e, cl.CardBuilt)]
    assert [e.hop for e in built] == [0, 1]
    assert built[1].parent_id == built[0].card_id
    assert task.hops[1].handoff_in.card_id == built[0].card_id
    stats = client.stats()
    assert stats.tasks_finished >= len(story_runs) and stats.cards_built >= 2
    # Replay from a later sequence number.
    tail = list(client.watch(task.id, from_seq=len(events) - 1))
    assert len(tail) == 1 and isinstance(tail[0], cl.TaskEnded)


def test_daemon_cards_decode_like_cpp(client, story_runs, dumper):
    """Every mode the daemon builds: hop-0 (self-contained) and hop-1
    (chained, exported flattened: two segments)."""
    seen = set()
    for name, (task, events) in story_runs.items():
        for hop, cid in hop_card_ids(events).items():
            data = client.cards.export_bytes(cid)
            card = Card.from_bytes(data)
            info = client.cards.get(cid)
            card.verify_id()  # the daemon's content-derived id, recomputed in Python
            # Export flattens a chain: other content, so another id than the leaf's.
            assert (card.card_id == cid) == (hop == 0)
            assert info.mode == card.segments[-1].mode
            assert card.fingerprint_hex == info.fingerprint
            assert card.total_tokens == info.context_tokens and card.first_token == 0
            assert len(card.segments) == hop + 1
            assert card.segments[-1].num_tokens == info.tokens
            kv = card.kv()
            np.testing.assert_array_equal(kv.view(np.uint32), dumper.kv(data).view(np.uint32))
            seen.add((card.mode, hop))
    assert {("full", 0), ("quantized", 0), ("quantized", 1), ("full", 1)} <= seen


def test_python_quantizer_reproduces_daemon_cards(client, story_runs):
    """The daemon's uniform 4/8-bit and 16-bit hop-0 cards, re-built in
    Python from the (exact, f32) full card of the same context: identical
    widths and section bytes."""
    full_task, full_events = story_runs["story_full"]
    full = client.cards.export(hop_card_ids(full_events)[0])
    kv = full.kv()
    for name in ("story_u4", "story_u8", "story_u16"):
        _, events = story_runs[name]
        dcard = client.cards.export(hop_card_ids(events)[0])
        assert dcard.token_ids.tolist() == full.token_ids.tolist()
        seg = dcard.segments[0]
        mine = write_card(kv[:, 0], kv[:, 1], full.token_ids, full.fingerprint,
                          bits=dcard.budget_bits, group_size=(seg.k_group_size, seg.v_group_size))
        assert mine.card_id == dcard.card_id  # same content, same id
        assert mine.segments[0].k_bits.tolist() == seg.k_bits.tolist()
        assert mine.segments[0].v_bits.tolist() == seg.v_bits.tolist()
        for layer in range(dcard.num_layers):
            for side in (0, 1):
                assert bytes(mine.section(0, layer, side)) == bytes(dcard.section(0, layer, side)), \
                    (name, layer, side)


@pytest.mark.parametrize("mode,bits", [("full", None), ("quantized", 8), ("quantized", 4),
                                       ("quantized", 5)])
def test_python_cards_import(client, story_runs, mode, bits):
    """Python cards of the daemon's context: full, 8 and 4 bits have the
    content (hence the id) of the daemon's own hop-0 cards, and the store
    dedups them; a 5-bit card is new to the store and round-trips byte for byte."""
    full, mine = python_card(client, story_runs, mode, bits)
    info = client.cards.import_(mine)
    assert info.id == mine.card_id and info.mode == mode
    assert info.tokens == info.context_tokens == full.total_tokens
    assert info.avg_bits == mine.avg_bits and info.fingerprint == full.fingerprint_hex
    back = client.cards.export(mine.card_id)
    assert back.content_id() == mine.card_id
    np.testing.assert_array_equal(back.kv().view(np.uint32), mine.kv().view(np.uint32))
    assert client.cards.import_(mine).id == mine.card_id  # a second import: the same card
    assert mine.card_id in {c.id for c in client.cards.list()}
    daemon_built = {"full": "story_full", 8: "story_u8", 4: "story_u4"}.get(bits or mode)
    if daemon_built:
        assert mine.card_id == hop_card_ids(story_runs[daemon_built][1])[0]
        assert info.source_agent == "writer"  # the stored card is the daemon's
        return
    assert info.source_agent == "pytest" and back.to_bytes() == mine.to_bytes()
    client.cards.delete(mine.card_id)
    with pytest.raises(NotFound):
        client.cards.get(mine.card_id)


def test_error_codes(client, story_runs):
    with pytest.raises(NotFound) as e:
        client.get("no-such-task")
    assert e.value.code == "NOT_FOUND" and e.value.details
    with pytest.raises(NotFound):
        list(client.watch("no-such-task"))
    with pytest.raises(NotFound):
        client.cancel("no-such-task")
    with pytest.raises(NotFound):
        client.resume("no-such-task", input="and then?")
    with pytest.raises(InvalidArgument):  # the text to continue with is required
        client.resume("no-such-task")
    with pytest.raises(NotFound) as e:
        client.submit("no_such_workflow", INPUT)
    assert "no_such_workflow" in e.value.details
    with pytest.raises(NotFound):
        client.submit(steps=[{"agent": "nobody", "instruction": "{input}"}], input=INPUT)
    for call in (client.cards.get, client.cards.export_bytes, client.cards.delete):
        with pytest.raises(NotFound):
            call("0" * 32)
    with pytest.raises(FailedPrecondition):  # hop 0's card is pinned by its child
        client.cards.delete(hop_card_ids(story_runs["story"][1])[0])
    with pytest.raises(InvalidArgument):
        client.submit("story", "")
    with pytest.raises(InvalidArgument):
        client.submit("story", INPUT, mode="card", bits=1.0)
    rng0 = np.random.default_rng(3)
    k0 = rng0.standard_normal((5, 4, 6, 8)).astype(np.float32)
    forged = bytearray(write_card(k0, k0, range(6), model_fingerprint_hex(MODEL_DIR),
                                  bits=4).to_bytes())
    forged[64] ^= 1
    from qkvshare.codec import header_checksum
    import struct
    struct.pack_into("<Q", forged, 24, header_checksum(bytes(forged[:struct.unpack_from(
        "<Q", forged, 16)[0]])))
    with pytest.raises(InvalidArgument, match="does not match its content"):
        client.cards.import_(bytes(forged))
    with pytest.raises(InvalidArgument) as e:
        client.cards.import_(b"QKVC not a card at all")
    assert "truncated" in e.value.details or "card" in e.value.details
    # Over limits.max_card_bytes: a full f32 card of 400 tokens (5 * 2 * 32 * 4 B each).
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 4, 400, 8)).astype(np.float32)
    big = write_card(k, k, np.arange(400) % 500, model_fingerprint_hex(MODEL_DIR), mode="full")
    assert big.card_bytes > MAX_CARD_BYTES
    with pytest.raises(ResourceExhausted):
        client.cards.import_(big)


def test_queue_full_and_cancel(client):
    """max_concurrent_tasks 1, queue_length 2: a 4th long task is rejected;
    cancelling queued and running tasks ends them CANCELLED."""
    long_hop = [{"agent": "writer", "instruction": "{input}", "max_new_tokens": 400}]
    ids = []
    with pytest.raises(ResourceExhausted):
        for _ in range(8):
            ids.append(client.submit(steps=long_hop, input=INPUT))
    assert 3 <= len(ids) < 8
    for tid in reversed(ids):
        client.cancel(tid)
    states = [client.state_name(client.wait(tid)) for tid in ids]
    assert states[-1] == "cancelled"  # was queued behind the others
    assert all(s in ("cancelled", "finished") for s in states)
    ended = [e for e in client.watch(ids[-1]) if isinstance(e, cl.TaskEnded)]
    assert ended and ended[0].state == "cancelled"


def test_incremental_cards_from_shared_memory(client, story_runs, dumper):
    """The hop-1 card as the store holds it (incremental, read from /dev/shm
    by its shm_name) decodes to the tail of its flattened export, and like C++."""
    for name in ("story", "story_full"):
        _, events = story_runs[name]
        ids = hop_card_ids(events)
        info = client.cards.get(ids[1])
        inc = Card.from_shm(info.shm_name)
        flat = client.cards.export(ids[1])
        assert inc.first_token == flat.segments[1].first_token > 0
        assert inc.parent_id == ids[0] and inc.card_id == ids[1]
        assert inc.token_ids.tolist() == flat.token_ids.tolist()
        kv = inc.kv()
        assert kv.shape[3] == inc.num_tokens == info.tokens
        np.testing.assert_array_equal(kv.view(np.uint32),
                                      flat.kv()[:, :, :, inc.first_token:].view(np.uint32))
        np.testing.assert_array_equal(kv.view(np.uint32),
                                      dumper.kv(inc.to_bytes()).view(np.uint32))
        with pytest.raises(CardError, match="self-contained"):
            inc.to_legacy_cache()


def test_foreign_model_card_imports_with_a_warning(client):
    rng = np.random.default_rng(9)
    k = rng.standard_normal((5, 4, 7, 8)).astype(np.float32)
    card = write_card(k, k, range(7), bytes(range(32)), bits=4)  # no hosted model has this
    info = client.cards.import_(card)
    assert info.foreign_model and any("fingerprint" in w for w in info.warnings)
    assert not client.cards.import_(  # the daemon's own model: no warning
        write_card(k, k, range(7), model_fingerprint_hex(MODEL_DIR), bits=4)).foreign_model


@pytest.mark.parametrize("mode,bits,workflow", [("full", None, "story_full"),
                                                ("quantized", 8, "story_u8"),
                                                ("quantized", 4, "story_u4")])
def test_task_starts_from_python_card(client, story_runs, mode, bits, workflow):
    """A card written in Python (the codec, from the context's exact K/V)
    imported into the daemon starts a task (context_card): its first step
    injects it and continues with the same greedy tokens as the workflow whose
    second hop received the daemon's own card of that context; a full card
    also equals re-prefilling the text."""
    full, mine = python_card(client, story_runs, mode, bits)
    assert client.cards.import_(mine).id == mine.card_id
    steps = [{"agent": "continuer", "instruction": "The next day,"}]
    task = client.run(steps=steps, input=INPUT, context_card=mine.card_id, mode="full")
    assert client.state_name(task) == "finished", task.reason
    assert task.context_card == mine.card_id
    hop = task.hops[0]
    assert hop.handoff_in.card_id == mine.card_id and hop.handoff_in.reprefill_tokens == 0
    assert not hop.handoff_in.fallback_reason
    assert hop.handoff_in.context_tokens == full.total_tokens
    assert hop.prefill_tokens < full.total_tokens  # the instruction only
    want = story_runs[workflow][0].hops[1].output
    assert want and task.output == want
    if mode == "full":
        text = client.run(steps=[{"agent": "writer", "instruction": "{input}"}] + steps,
                          input=INPUT, mode="reprefill")
        assert client.state_name(text) == "finished", text.reason
        assert text.hops[0].output == story_runs["story_full"][0].hops[0].output
        assert task.output == text.hops[1].output


def test_context_card_errors(client):
    with pytest.raises(InvalidArgument) as e:
        client.submit(steps=[{"agent": "continuer"}], input=INPUT, context_card="xyz")
    assert "context_card" in e.value.details
    with pytest.raises(NotFound):
        client.submit(steps=[{"agent": "continuer"}], input=INPUT, context_card="0" * 32)
