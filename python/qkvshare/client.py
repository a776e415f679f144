"""A small typed client for qkvshared's gRPC API (proto/qkvshare/v1).

    from qkvshare import Client
    c = Client("unix:///run/qkvshare/qkvshared.sock")
    tid = c.submit("story", "Once upon a time", bits=4, policy="uniform")
    for ev in c.watch(tid):
        if isinstance(ev, Token): print(ev.text, end="")
    task = c.get(tid)            # qkvshare.v1.Task message
    card = c.cards.export(task.hops[1].handoff_in.card_id)   # qkvshare.Card

Every daemon error becomes a `qkvshare.errors.RpcError` subclass named after
its gRPC code (NotFound, InvalidArgument, ResourceExhausted, ...), carrying
`code` (the code name) and `details` (the daemon's message). Units: times in
ms (`*_ms`), sizes in bytes, bits per element. Needs grpcio and protobuf;
the stubs are generated from proto/ on first use (qkvshare._proto).
"""
import dataclasses
import typing

import grpc

from . import _proto
from .errors import RpcError, rpc_error

_pb = None


def _stubs():
    global _pb
    if _pb is None:
        _pb = _proto.load()
    return _pb


def _wrap(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as e:
        raise rpc_error(e.code().name, e.details() or "") from None


# --- typed task events (TaskEvent's oneof) ----------------------------------
@dataclasses.dataclass
class Event:
    """Base of the task events; seq numbers from 0, time in Unix ms."""
    seq: int
    time_unix_ms: int
    task_id: str


@dataclasses.dataclass
class Queued(Event):
    position: int  # tasks ahead in the queue


@dataclasses.dataclass
class HopStarted(Event):
    hop: int  # 0-based
    num_hops: int
    agent: str


@dataclasses.dataclass
class Token(Event):
    hop: int
    id: int  # token id
    text: str  # text completed by this token (may be "")
    index: int  # 0-based within the hop


@dataclasses.dataclass
class CardBuilt(Event):
    hop: int
    card_id: str
    parent_id: str
    tokens: int
    bytes: int
    avg_bits: float
    build_ms: float


@dataclasses.dataclass
class HandoffDone(Event):
    hop: int  # the receiving hop
    stats: typing.Any  # qkvshare.v1.HandoffStats


@dataclasses.dataclass
class HopFinished(Event):
    hop: int
    result: typing.Any  # qkvshare.v1.HopResult


@dataclasses.dataclass
class TaskEnded(Event):
    state: str  # "finished", "failed" or "cancelled"
    reason: str
    output: str


def _event(ev):
    base = (ev.seq, ev.time_unix_ms, ev.task_id)
    kind = ev.WhichOneof("event")
    if kind == "queued":
        return Queued(*base, ev.queued.position)
    if kind == "hop_started":
        e = ev.hop_started
        return HopStarted(*base, e.hop, e.num_hops, e.agent)
    if kind == "token":
        e = ev.token
        return Token(*base, e.hop, e.id, e.text, e.index)
    if kind == "card_built":
        e = ev.card_built
        return CardBuilt(*base, e.hop, e.card_id, e.parent_id, e.tokens, e.bytes, e.avg_bits,
                         e.build_ms)
    if kind == "handoff":
        return HandoffDone(*base, ev.handoff.hop, ev.handoff.stats)
    if kind == "hop_finished":
        return HopFinished(*base, ev.hop_finished.hop, ev.hop_finished.result)
    if kind in ("finished", "failed", "cancelled"):
        e = getattr(ev, kind)
        return TaskEnded(*base, kind, e.reason, e.output)
    return Event(*base)


_MODES = {None: 0, "card": 1, "full": 2, "reprefill": 3}
_POLICIES = {None: 0, "adaptive": 1, "uniform": 2}
TASK_STATES = {0: "unspecified", 1: "queued", 2: "running", 3: "finished", 4: "failed",
               5: "cancelled"}


def _handoff(pb, mode=None, bits=None, policy=None):
    if mode not in _MODES or policy not in _POLICIES:
        raise ValueError("handoff mode must be card/full/reprefill and policy adaptive/uniform")
    h = pb.common_pb2.Handoff(mode=_MODES[mode], policy=_POLICIES[policy])
    if bits is not None:
        h.bits = float(bits)
    return h


def _generation(pb, max_new_tokens=None, temperature=None, top_k=None, top_p=None, seed=None,
                stop=None):
    g = pb.common_pb2.GenerationParams()
    for name, value in (("max_new_tokens", max_new_tokens), ("temperature", temperature),
                        ("top_k", top_k), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            setattr(g, name, value)
    if stop:
        g.stop.extend(stop)
    return g


class Cards:
    """The daemon's card store (CardService); `client.cards`."""

    def __init__(self, client):
        self._c = client

    def list(self):
        """CardInfo messages of every stored card."""
        pb = _stubs()
        return list(_wrap(self._c._cards.ListCards, pb.cards_pb2.ListCardsRequest(),
                          timeout=self._c.timeout).cards)

    def get(self, card_id):
        """CardInfo of one card. Raises NotFound."""
        pb = _stubs()
        return _wrap(self._c._cards.GetCard, pb.cards_pb2.GetCardRequest(id=card_id),
                     timeout=self._c.timeout)

    def export_bytes(self, card_id):
        """The card as self-contained (flattened) .qkvcard bytes. Raises NotFound."""
        pb = _stubs()

        def run():
            stream = self._c._cards.ExportCard(pb.cards_pb2.ExportCardRequest(id=card_id),
                                               timeout=self._c.timeout)
            return b"".join(chunk.data for chunk in stream)

        return _wrap(run)

    def export(self, card_id, path=None):
        """The card as a validated qkvshare.Card (also written to `path` if
        given). Raises NotFound, or CardError if the bytes do not validate."""
        from .codec import Card
        data = self.export_bytes(card_id)
        if path is not None:
            with open(path, "wb") as f:
                f.write(data)
        return Card.from_bytes(data)

    def import_(self, card, chunk_bytes=1 << 20):
        """Adds a card (a qkvshare.Card, bytes, or a .qkvcard path) to the
        store; returns its CardInfo. A card whose content the store holds
        already is deduplicated: the stored card's info comes back.
        Raises InvalidArgument (corrupt card, or an id that does not match
        the content), ResourceExhausted (over max_card_bytes or the quota),
        AlreadyExists (another content under the same id)."""
        pb = _stubs()
        if hasattr(card, "to_bytes"):
            data = card.to_bytes()
        elif isinstance(card, (bytes, bytearray, memoryview)):
            data = bytes(card)
        else:
            with open(card, "rb") as f:
                data = f.read()

        def chunks():
            for i in range(0, max(len(data), 1), chunk_bytes):
                yield pb.cards_pb2.CardChunk(data=data[i:i + chunk_bytes])

        return _wrap(self._c._cards.ImportCard, chunks(), timeout=self._c.timeout)

    def delete(self, card_id):
        """Removes a card. Raises NotFound, FailedPrecondition (in use)."""
        pb = _stubs()
        _wrap(self._c._cards.DeleteCard, pb.cards_pb2.DeleteCardRequest(id=card_id),
              timeout=self._c.timeout)


setattr(Cards, "import", Cards.import_)


class Client:
    """Connection to one qkvshared.

    address: a gRPC target, e.g. "unix:///run/qkvshare/qkvshared.sock" or
    "127.0.0.1:7420". timeout: seconds per unary call (streams: per stream,
    None = no limit for watch). Closing: `close()` or use as a context
    manager."""

    def __init__(self, address="unix:///run/qkvshare/qkvshared.sock", timeout=60.0,
                 max_message_bytes=64 << 20):
        pb = _stubs()
        self.address = address
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._tasks = pb.tasks_pb2_grpc.TaskServiceStub(self._channel)
        self._cards = pb.cards_pb2_grpc.CardServiceStub(self._channel)
        self._catalog = pb.catalog_pb2_grpc.CatalogServiceStub(self._channel)
        self._admin = pb.admin_pb2_grpc.AdminServiceStub(self._channel)
        self.cards = Cards(self)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wait_ready(self, timeout=30.0):
        """Polls GetStatus until the daemon answers (e.g. right after starting
        it); returns its Status. Raises Unavailable after `timeout` seconds."""
        import time
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.status()
            except RpcError as e:
                if e.code != "UNAVAILABLE" or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # --- tasks --------------------------------------------------------------
    def submit(self, workflow=None, input="", *, steps=None, mode=None, bits=None, policy=None,
               max_new_tokens=None, temperature=None, top_k=None, top_p=None, seed=None,
               stop=None, deadline_ms=0, label="", context_card="", keep_context=False):
        """Queues a task; returns its id.

        workflow: a workflow name (configs/workflows), or steps: an inline
        pipeline, a list of dicts {agent, instruction, handoff: {mode, bits,
        policy}, max_new_tokens, temperature, ...}. input: the task text.
        Overrides for every hop: mode ("card"|"full"|"reprefill"), bits
        (2..8 or 16), policy ("adaptive"|"uniform"), and generation
        parameters. deadline_ms: relative deadline (0: none).
        context_card: id (32 hex digits) of a stored card (imported, e.g. a
        Python-written one, or kept by an earlier task) the first step starts
        from, injected instead of prefilled. keep_context: keep the task's
        final context as a pinned card; its id is the Task's kept_card.
        Raises NotFound (unknown workflow/agent, context_card not stored),
        InvalidArgument (bad hop spec, empty input, a context_card of another
        model), ResourceExhausted (queue full), Unavailable."""
        pb = _stubs()
        t = pb.tasks_pb2
        req = t.SubmitTaskRequest(input=input, deadline_ms=deadline_ms, label=label,
                                  context_card=context_card, keep_context=keep_context)
        if (workflow is None) == (steps is None):
            raise ValueError("give exactly one of workflow or steps")
        if workflow is not None:
            req.workflow = workflow
        else:
            inline = t.InlineWorkflow()
            for s in steps:
                s = dict(s)
                hop = inline.hops.add(agent=s.pop("agent"), instruction=s.pop("instruction", ""))
                if "handoff" in s:
                    hop.handoff.CopyFrom(_handoff(pb, **s.pop("handoff")))
                hop.generation.CopyFrom(_generation(pb, **s))
            req.inline.CopyFrom(inline)
        if mode is not None or bits is not None or policy is not None:
            req.handoff_override.CopyFrom(_handoff(pb, mode, bits, policy))
        req.generation_override.CopyFrom(_generation(pb, max_new_tokens, temperature, top_k,
                                                     top_p, seed, stop))
        return _wrap(self._tasks.SubmitTask, req, timeout=self.timeout).task_id

    def watch(self, task_id, from_seq=0, skip_tokens=False, timeout=None):
        """Iterator of typed events (Queued, HopStarted, Token, CardBuilt,
        HandoffDone, HopFinished, TaskEnded) from `from_seq` until the task
        ends. Raises NotFound (unknown task) while iterating."""
        pb = _stubs()
        req = pb.tasks_pb2.WatchTaskRequest(task_id=task_id, from_seq=from_seq,
                                            skip_tokens=skip_tokens)
        stream = self._tasks.WatchTask(req, timeout=timeout)
        try:
            for ev in stream:
                yield _event(ev)
        except grpc.RpcError as e:
            raise rpc_error(e.code().name, e.details() or "") from None
        finally:
            stream.cancel()

    def get(self, task_id):
        """The Task message (state, per-hop results and stats). Raises NotFound."""
        pb = _stubs()
        return _wrap(self._tasks.GetTask, pb.tasks_pb2.GetTaskRequest(task_id=task_id),
                     timeout=self.timeout)

    def list(self, limit=0):
        """Task messages known to the daemon, newest first (0: all kept)."""
        pb = _stubs()
        return list(_wrap(self._tasks.ListTasks, pb.tasks_pb2.ListTasksRequest(limit=limit),
                          timeout=self.timeout).tasks)

    def cancel(self, task_id):
        """Cancels a queued or running task; returns the Task. Raises NotFound."""
        pb = _stubs()
        return _wrap(self._tasks.CancelTask, pb.tasks_pb2.CancelTaskRequest(task_id=task_id),
                     timeout=self.timeout)

    def resume(self, task_id, **fields):
        """Resumes a task (TaskService.ResumeTask, when the daemon's API has
        it); extra fields go into ResumeTaskRequest. Raises RpcError
        UNIMPLEMENTED when the API has no ResumeTask."""
        pb = _stubs()
        if not hasattr(pb.tasks_pb2, "ResumeTaskRequest") or not hasattr(self._tasks, "ResumeTask"):
            raise rpc_error("UNIMPLEMENTED", "this API version has no TaskService.ResumeTask")
        req = pb.tasks_pb2.ResumeTaskRequest(task_id=task_id, **fields)
        return _wrap(self._tasks.ResumeTask, req, timeout=self.timeout)

    def wait(self, task_id, timeout=None):
        """Blocks until the task ends (watching without tokens); returns the Task."""
        for _ in self.watch(task_id, skip_tokens=True, timeout=timeout):
            pass
        return self.get(task_id)

    def run(self, workflow=None, input="", **kwargs):
        """submit() then wait(); returns the final Task."""
        return self.wait(self.submit(workflow, input, **kwargs))

    @staticmethod
    def state_name(task):
        """"queued" / "running" / "finished" / "failed" / "cancelled"."""
        return TASK_STATES.get(task.state, "unspecified")

    # --- catalog and admin ---------------------------------------------------
    def agents(self):
        """AgentInfo messages (name, model, dtype, fingerprint, ...)."""
        pb = _stubs()
        return list(_wrap(self._catalog.ListAgents, pb.catalog_pb2.ListAgentsRequest(),
                          timeout=self.timeout).agents)

    def workflows(self):
        """WorkflowInfo messages."""
        pb = _stubs()
        return list(_wrap(self._catalog.ListWorkflows, pb.catalog_pb2.ListWorkflowsRequest(),
                          timeout=self.timeout).workflows)

    def status(self):
        """The daemon's Status message (version, uptime_ms, queue, store bytes)."""
        pb = _stubs()
        return _wrap(self._admin.GetStatus, pb.admin_pb2.GetStatusRequest(), timeout=self.timeout)

    def stats(self):
        """The daemon's Stats message (counters; latency summaries in ms)."""
        pb = _stubs()
        return _wrap(self._admin.GetStats, pb.admin_pb2.GetStatsRequest(), timeout=self.timeout)
