"""How one turn of an actor runs and is saved: run the method, save with compare-and-set
(and its call id, for exactly-once calls), and on a conflict back off, reload and run
again; after ``PESSIMISTIC_AFTER`` conflicts, run under the record's row lock.

``Turns`` is the part of ``ActorSystem`` that does this; ``actors.py`` has the rest
(activation, write-behind flushes, idle deactivation, following changes).
"""

from __future__ import annotations

import json
import logging
import typing
from typing import TYPE_CHECKING, Any

from .actor_state import decode_json_state, decode_state, encode_state, return_hint
from .errors import CallAlreadyApplied, InvalidInput, VersionConflict
from .objects import state_from_json, state_to_json
from .record import AppliedCall, Encoded, Record
from .reminders import Reminder, ReminderRequest, reminder_call_id
from .retry import back_off
from .store import Store, Transaction

if TYPE_CHECKING:
    from .actors import Activation, Actor

logger = logging.getLogger("pgactors.actors")

# After this many conflicts in one call, the call takes a row lock for its turn: a
# process that keeps losing the compare-and-set race then cannot starve.
PESSIMISTIC_AFTER = 3
# The recorded result of a call that returned None (every reminder firing).
NO_RESULT = Encoded("null")


class _UserError(Exception):
    """Carries an exception raised by an actor method out of the turn's error handling,
    so it is re-raised as itself and never taken for a storage failure."""

    def __init__(self, original: Exception) -> None:
        super().__init__(original)
        self.original = original


class Turns:
    """Runs and saves turns on ``store``; counts reruns and locked turns."""

    def __init__(self, store: Store, max_retries: int) -> None:
        self.store = store
        self.max_retries = max_retries
        self.reruns = 0
        self.locked_turns = 0

    async def _turn(
        self,
        activation: Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
        call_id: str | None,
        maybe_applied: bool,
    ) -> Any:
        """A write-through turn: run, then save with compare-and-set; on a conflict back
        off, reload and run again, and after ``PESSIMISTIC_AFTER`` conflicts hold a row
        lock for the turn."""
        type_name, id = activation.cls.type_name, activation.id
        for attempt in range(self.max_retries + 1):
            if call_id is not None and maybe_applied:
                applied = await self.store.applied_call(type_name, id, call_id)
                if applied is not None:
                    return self._recorded_result(activation, method, applied)
            try:
                if attempt >= PESSIMISTIC_AFTER:
                    return await self._locked_turn(activation, method, args, kwargs, call_id)
                result = await self._run(activation, method, args, kwargs)
                await self._save(activation, method, result, call_id)
                return result
            except _UserError as error:
                raise error.original from error.original.__cause__
            except CallAlreadyApplied as applied_call:
                # This run repeated an applied call: drop its effect, answer as before.
                activation.stale = True
                return self._recorded_result(activation, method, applied_call.call)
            except VersionConflict:
                if attempt == self.max_retries:
                    activation.stale = True
                    raise
            except BaseException:
                # The state in memory may be ahead of what committed (the save failed).
                activation.stale = True
                raise
            self.reruns += 1
            maybe_applied = True  # the winner may have been this very call
            await back_off(attempt)  # first, then reload: rerun on the newest state
            await self._reload(activation)
        raise AssertionError("unreachable")

    async def _locked_turn(
        self,
        activation: Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
        call_id: str | None,
    ) -> Any:
        """Run the turn in a transaction holding the record's row lock: writers of it
        (other instances) wait, so this save cannot lose. Only creating a record can
        still conflict (a missing row cannot be locked)."""
        cls, id = activation.cls, activation.id
        self.locked_turns += 1
        async with self.store.transaction() as tx:
            record = await tx.load(cls.type_name, id, lock=True)
            self._install(activation, record)
            if call_id is not None:
                applied = await tx.applied_call(cls.type_name, id, call_id)
                if applied is not None:
                    return self._recorded_result(activation, method, applied)
            result = await self._run(activation, method, args, kwargs)
            await self.apply_reminders(tx, activation)
            encoded = self._encode(activation)
            if encoded == activation.saved:
                return result
            if call_id is None:
                record = await tx.save(
                    cls.type_name, id, encoded, expected_version=activation.version
                )
            else:
                record = await tx.save_call(
                    cls.type_name,
                    id,
                    encoded,
                    expected_version=activation.version,
                    call_id=call_id,
                    result=self._encode_result(activation, method, result),
                )
        activation.version, activation.saved = record.version, encoded
        return result

    async def _run(
        self,
        activation: Activation,
        method: str,
        args: typing.Sequence[Any],
        kwargs: typing.Mapping[str, Any],
    ) -> Any:
        """Call the method. A write-through call that raises changes nothing: the state
        goes back to what was saved."""
        actor = activation.actor
        assert actor is not None
        activation.reminder_ops.clear()
        try:
            return await getattr(actor, method)(*args, **kwargs)
        except Exception as exc:
            activation.reminder_ops.clear()
            if activation.policy != "write_through":
                raise
            self._restore(activation)
            raise _UserError(exc) from exc
        except BaseException:
            activation.reminder_ops.clear()
            if activation.policy == "write_through":
                self._restore(activation)
            raise

    async def _reload(self, activation: Activation) -> None:
        self._install(activation, await self.store.load(activation.cls.type_name, activation.id))

    def _install(self, activation: Activation, record: Record | None) -> None:
        """Make ``record`` (None: never saved) the activation's state."""
        cls = activation.cls
        if record is None:
            shell = cls(activation.id, None, activation)
            state = shell.initial_state()
            activation.version, activation.saved, activation.unknown = 0, None, {}
        else:
            state, activation.unknown = decode_state(cls, record)
            activation.version = record.version
            activation.saved = self._encode_state(cls, state, activation.unknown)
        if activation.actor is None:
            activation.actor = cls(activation.id, state, activation)
        else:
            activation.actor.state = state
        activation.dirty = False
        activation.stale = False

    def _restore(self, activation: Activation) -> None:
        """Put back the last saved state (no round trip: it is the encoded one kept)."""
        actor, saved, cls = activation.actor, activation.saved, activation.cls
        assert actor is not None
        if saved is None:
            actor.state = actor.initial_state()
        elif saved.text is None:
            assert cls.codec is not None and saved.payload is not None and saved.manifest
            actor.state = cls.codec.decode(saved.payload, saved.manifest, cls.type_name)
        else:
            record_data = json.loads(saved.text)
            state, activation.unknown = decode_json_state(cls, activation.id, record_data)
            actor.state = state

    async def save_activation(self, activation: Activation) -> None:
        """Save the state if it changed (compare-and-set on the version it was loaded at);
        the caller holds the activation's lock."""
        if activation.actor is not None:
            await self._save(activation, None, None, None)

    async def _save(
        self,
        activation: Activation,
        method: str | None,
        result: Any,
        call_id: str | None,
        advance: Reminder | None = None,
    ) -> bool:
        """Save the turn's state; True if ``advance`` (the reminder it fired) was moved on
        in the same statement."""
        # Encoded before the first await: the saved state is this turn's, never torn.
        encoded = self._encode(activation)
        if activation.reminder_ops:
            await self._save_with_reminders(activation, encoded, method, result, call_id)
            return False
        if encoded == activation.saved:
            activation.dirty = False
            return False
        type_name, id = activation.cls.type_name, activation.id
        if call_id is None or method is None:
            record = await self.store.save(
                type_name, id, encoded, expected_version=activation.version
            )
        else:
            record = await self.store.save_call(
                type_name,
                id,
                encoded,
                expected_version=activation.version,
                call_id=call_id,
                result=self._encode_result(activation, method, result),
                advance=advance,
            )
        activation.version, activation.saved, activation.dirty = record.version, encoded, False
        return advance is not None

    async def _save_with_reminders(
        self,
        activation: Activation,
        encoded: Encoded,
        method: str | None,
        result: Any,
        call_id: str | None,
    ) -> None:
        """Save the state and the reminders the turn set or cancelled, in one transaction
        (reminders first: the order a firing takes its locks in)."""
        type_name, id = activation.cls.type_name, activation.id
        record = None
        async with self.store.transaction() as tx:
            await self.apply_reminders(tx, activation)
            if encoded != activation.saved:
                if call_id is None or method is None:
                    record = await tx.save(
                        type_name, id, encoded, expected_version=activation.version
                    )
                else:
                    record = await tx.save_call(
                        type_name,
                        id,
                        encoded,
                        expected_version=activation.version,
                        call_id=call_id,
                        result=self._encode_result(activation, method, result),
                    )
        if record is not None:
            activation.version, activation.saved = record.version, encoded
        activation.dirty = False

    async def apply_reminders(self, tx: Transaction, activation: Activation) -> None:
        """The reminders the turn set (a request) or cancelled (a name), in ``tx``."""
        ops, activation.reminder_ops = list(activation.reminder_ops), []
        for op in ops:
            if isinstance(op, ReminderRequest):
                s = op.schedule
                await tx.set_reminder(
                    op.type, op.id, op.name, at=s.at, after=s.after, every=s.every
                )
            else:
                await tx.cancel_reminder(activation.cls.type_name, activation.id, op)

    async def reminder_turn(self, activation: Activation, reminder: Reminder) -> bool:
        """Run ``on_reminder`` as a write-through turn recorded under the firing's call id
        (``reminder_call_id``), so a firing is applied once however many instances run
        it, then move the reminder on (mostly in the statement that saves the state);
        the caller holds the activation's lock. False if this firing was applied
        already (by another instance, or before a crash). The caller's exception comes
        out as itself, and nothing of that turn is saved (the reminder stays due)."""
        call_id = reminder_call_id(reminder)
        if activation.stale:
            await self._reload(activation)
        for attempt in range(self.max_retries + 1):
            try:
                await self._run(activation, "on_reminder", (reminder.name,), {})
                if not await self._save(activation, "on_reminder", None, call_id, reminder):
                    # Saved in a transaction, or nothing to save: moved on after it.
                    # A crash between the two leaves it due; its next firing finds the
                    # recorded call (or changes nothing again) and moves it on.
                    await self.store.advance_reminder(reminder)
                return True
            except _UserError as error:
                raise error.original from error.original.__cause__
            except CallAlreadyApplied:
                activation.stale = True  # this run's state is not the committed one
                # Usually moved on by the refused statement already; this is then a no-op.
                await self.store.advance_reminder(reminder)
                return False
            except VersionConflict:
                if attempt == self.max_retries:
                    activation.stale = True
                    raise
            except BaseException:
                activation.stale = True
                raise
            self.reruns += 1
            await back_off(attempt)
            await self._reload(activation)
        raise AssertionError("unreachable")

    def _encode(self, activation: Activation) -> Encoded:
        assert activation.actor is not None
        return self._encode_state(activation.cls, activation.actor.state, activation.unknown)

    def _encode_state(self, cls: type[Actor[Any]], state: Any, unknown: dict[str, Any]) -> Encoded:
        """What a save would store: equal means nothing to save."""
        if cls.codec is not None:
            return self.store.encode_binary(*cls.codec.encode(state))
        return self.store.encode(encode_state(cls, state, unknown))

    def _encode_result(self, activation: Activation, method: str, result: Any) -> Encoded:
        if result is None:
            return NO_RESULT
        where = f"{activation.cls.__qualname__}.{method}() result"
        try:
            return self.store.encode(state_to_json(result, where))
        except InvalidInput as exc:
            self._restore(activation)
            raise InvalidInput(
                f"{where} is recorded for exactly-once calls, so it must be JSON (or a "
                f"dataclass, pydantic model or msgspec Struct): {exc}"
            ) from None

    def _recorded_result(self, activation: Activation, method: str, call: AppliedCall) -> Any:
        """A recorded result, as the method's return annotation says (else plain JSON)."""
        hint = return_hint(activation.cls, method)
        if hint is None:
            return call.result
        where = f"recorded result of {activation.cls.__qualname__}.{method}()"
        return state_from_json(hint, call.result, where)
