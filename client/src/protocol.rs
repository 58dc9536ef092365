//! # The fast-path protocol, and why it is exact under crashes
//!
//! ## Invariant
//!
//! No credit is created or destroyed. At every instant, for every lane `l` and pool `p`:
//!
//! ```text
//! lane:  topped_up(l) = avail(l) + local(l) + held(l) + consumed(l) + revoked(l) + reclaimed(l)
//! pool:  granted(p) + overrun(p) = available(p) + carved(p) + consumed(p) + returned(p)
//!        carved(p) = sum over lanes l carved from p of
//!                    topped_up(l) - revoked(l) - reclaimed(l) - harvested(l)
//! ```
//!
//! (`granted = available + held + consumed + returned` of the design, with `carved` the
//! pool's "held", and overruns, which are charged past reservations, on both sides.)
//! A named task's budget is a pool like any other (its lanes are carved from it with the
//! rest of their limits), so these equations cover it. Its calls obey, for every task `t`:
//!
//! ```text
//! tasks: given(t) = done(t) + sum over live lanes l of t of limit(l) <= max_calls(t)
//!        calls(l) <= limit(l)            (calls made by lane l, given to lane l)
//! ```
//!
//! and the pod writes at most one work-unit record per task (exactly one once it is
//! completed).
//! `held(l)` is the sum of the lane's reservation slots and `local(l)` the owner's local
//! credits, each with a half-done operation decided from its words exactly as reclaim
//! decides it (below). `consumed(l)` counts the part of each actual cost the reservation
//! paid for; the part past the reservation (an overrun) is counted in `overrun(l)` and
//! charged to the pools directly, so an overrun can pass a cap by at most the overruns
//! themselves. And: every credit held by a dead process is returned to the pools by the
//! sidecar, exactly once. `audit.rs` reads every term; tests and loom models assert
//! the equations exactly.
//!
//! ## Who writes what
//!
//! * The **sidecar** is the single writer of pools, of each lane's sidecar line
//!   (`topped_up`, `revoked`, `reclaimed`, ring tail, harvest marks, pool list, flush
//!   request) and of its journal. Its multi-word updates go through the intent journal
//!   (`journal.rs`).
//! * A lane is claimed by one agent **process** with one CAS on its claim word
//!   `[holder:48 | generation:15 | owned:1]`: the holder names the process's liveness lock
//!   (see [`crate::holder`]: a `flock` on a file in the region's holders folder, held for
//!   the process's life, so liveness holds across PID namespaces and uids), and the
//!   generation is bumped at every claim (a free lane keeps its last one). At any moment
//!   one **thread** of the process owns the lane (per-thread lanes, handed to another
//!   thread of the process when the old one exits). Only the owner allocates and settles
//!   slots and writes `local`, `consumed`, `overrun`, the ring head, the lost counter and
//!   the transfer intent: single-writer words, updated with plain stores.
//! * `avail` is the one word both write: `[stag:8 | otag:16 | credits:40]`. The owner
//!   changes it only by CAS, stamping its **owner tag** `otag`; the sidecar only by
//!   `fetch_add` (top-up) or CAS (revoke), stamping its **sidecar tag** `stag` and never
//!   touching `otag`. Each side's tag therefore names that side's last effect on the word.
//! * Every owner operation records its **intent** (amounts, the before-value of each word
//!   it will change, the tag its CAS will carry) before any effect. The owner is
//!   sequential, so at most one owner operation per lane is in flight, and each of its
//!   effects can be decided afterwards: a single-writer word was changed iff it differs
//!   from its recorded before-value; the CAS on `avail` happened iff `avail.otag` equals
//!   the intent's tag `t = otag + 1` (which differs from the tag in `avail` until it lands).
//!
//! ## Steps, and why a crash at each is safe
//!
//! **pull** (owner, when `local` is short; `lane.rs`): moves a batch (up to 8x the
//! call, at least what it lacks; only what it lacks while a revoke is pending) from
//! `avail` to `local`.
//! 1. transfer intent: batch, `local` before, tag `t`, marked active.
//!    Crash here: `avail.otag != t`: nothing happened; recovery drops the intent.
//! 2. CAS `avail`: credits -= batch, otag := t (retried, with a fresh intent, if the
//!    sidecar moved the word). Crash here: `avail.otag == t` and `local` unchanged, so
//!    recovery finishes step 3.
//! 3. `local := before + batch`. 4. clear the intent.
//!
//! **reserve** = take from `local` (after a pull if needed): no read-modify-write.
//! 1. write amount, `local` (before), the call's names and, for a counted call (a task
//!    lane with `max_calls`), `calls` (before) into a free slot; state := `RESERVING` (or
//!    `RESERVING_CALL`). Crash here: `local == before`: not taken; reclaim frees the slot
//!    (and restores `calls` from its before-value).
//! 2. a counted call: `calls := before + 1` (refused before step 1 if `calls` has reached
//!    the lane's `L_CALLS_LIMIT`). Crash here: still not taken; reclaim uncounts it.
//! 3. `local := before - amount`. Crash here: `local != before`: taken; the slot holds
//!    `amount`, which reclaim returns; the call stays counted (a reservation taken is a
//!    call made, committed or not).
//! 4. state := `HELD`. The reservation exists.
//!
//! A [`crate::LocalTask`] budget is debited (one CAS) before and refunded if the lane
//! refuses; it is process-local, so it is not part of the equation.
//!
//! **calls** (sidecar; `tasks.rs`): `give_calls` raises a task lane's `L_CALLS_LIMIT` and
//! the task's `given` together (journaled absolute stores), never past `max_calls`; only
//! the sidecar writes both, and the owner only reads the limit, so a raise racing a
//! reserve is seen or not, never half. Reclaim of a task lane (after its slots are
//! decided, so `calls` is final) books `given -= limit - calls`, `done += calls` and zeroes
//! the lane's two words in one journaled update: the unused calls go back exactly once.
//!
//! **complete** (a task's completion; `tasks.rs`): reserve a zero-credit slot flagged as a
//! work unit; CAS the task's completion word from 0 to a mark naming (lane, claim
//! generation, slot); the winner commits the slot (its record is the work unit), a loser
//! cancels. Crash after the CAS: reclaim finds the held slot named by the mark and settles
//! it as a commit, so the record is written exactly once.
//!
//! Slot states carry the **generation** of the claim they were made under, and the
//! reservation remembers it.
//!
//! **commit / cancel** on the owner thread = settle (below) directly, after checking that
//! the lane's claim word is still the one this process wrote and the slot still `HELD`
//! under the reservation's generation; otherwise the lane was reclaimed and the commit is
//! refused (`CommitError::Reclaimed`), never settled into a lane reclaim already settled.
//! On another thread: CAS state `HELD(g)` to `FINISHING(g)` (the slot is taken: a stale
//! reservation, from an earlier claim of a reused slot, fails here and writes nothing),
//! write the actual cost, store `COMMITTED(g)` / `CANCELLED(g)` (one word: the commit
//! happened or it did not), then set the slot's bit in the lane's pending mask. The owner
//! settles pending slots of its own generation at its next reserve or when its thread
//! exits; reclaim settles them if the process dies. A crash before the `COMMITTED` store
//! leaves `FINISHING`, which reclaim settles as a cancel (the outcome is unknown); after
//! it, a committed slot, which reclaim finds by scanning slot states.
//!
//! **reserve** on the owner thread first checks the claim word too: a lane reclaimed under
//! a live process (its lock was lost, see [`crate::holder`]) is dropped and a fresh one
//! claimed, so the process never writes to it again. This check and the owner's next
//! write are two steps, so the one case the check cannot cover is a reclaim landing
//! between them; it needs a live process judged dead, which the kernel lock rules out
//! unless the process released the lock itself, and what such a process can still do is
//! bounded by the sidecar's check of what each lane reports.
//!
//! **settle** (owner, or the sidecar acting as owner of a dead lane):
//! 1. record actual and the before-values of `consumed`, `overrun`, ring head, `lost` and
//!    `local` in the slot; state := `SETTLING`. From here the commit is decided.
//! 2. `consumed := before + paid` (paid = min(actual, reserved));
//! 3. `overrun := before + (actual - paid)`;
//! 4. push the usage record, or count it lost when the ring is full;
//! 5. `local := before + refund` (refund = reserved - paid);
//! 6. state := `EMPTY`.
//!
//! Each of steps 2-5 is decided by its own word against its before-value, so finishing a
//! half-done settle redoes exactly the missing steps (`finish_settling` is the same code
//! for the owner and for recovery).
//!
//! **commit on the owner thread, the common case** (`commit_owned`: the actual cost within
//! the reservation, room in the ring; anything else settles as above). The usage record is
//! the intent, so the slot gets one before-value instead of five:
//! 1. write the record at ring position `h = head` without publishing it (the ring has
//!    room, so no unread record is there and the sidecar does not read past the head),
//!    with `consumed` (before) in its spare word `R_CONS_BEFORE`; `local` (before) into the
//!    slot; state := `SETTLING_REC(h)` (the low 32 bits of `h` in the state word). From here
//!    the commit is decided. Crash before it: the slot is still `HELD`: reclaim cancels it;
//!    the unpublished record is never read.
//! 2. `consumed := before + actual`; 3. `head := h + 1` (publishes the record);
//! 4. `local := before + (reserved - actual)`; 5. state := `EMPTY`.
//!
//! Recovery decides each of steps 2-4 by one word: the owner is sequential and nothing
//! else moves the head until the slot is empty, so the head is `h` (not published: publish
//! it) or `h + 1` (published); `consumed` against the record's before-value; `local` against
//! the slot's. The record itself cannot change meanwhile (only the owner writes records).
//!
//! **flush** (owner: when a revoke asks, or when its thread exits): transfer intent
//! (amount, `local` before, tag `t`); `local := before - x`; CAS `avail`: credits += x,
//! otag := t; clear. Recovery: `local == before`: nothing happened; else if
//! `avail.otag != t` it finishes the CAS.
//!
//! **hand back** (owner, when its `Gate` is dropped; `gate.rs`): settle pending commits,
//! flush all of `local` (above), then CAS the claim from owned to reclaiming. The owner
//! writes nothing after that CAS, so the lane is in exactly the state of step 1 of reclaim
//! (below) with no half-done owner operation; the sidecar's `reclaim_dead` reclaims such
//! lanes of live processes too and frees them. A crash before the CAS leaves an owned lane of
//! a dead process: ordinary reclaim.
//!
//! **top-up** (sidecar; `carve.rs`): check every pool of the lane has `amount`
//! above the tier's floor (else record the binding limit in the lane); journal the
//! absolute post-values (pool available/carved, lane `topped_up`) and the new `stag`;
//! `fetch_add(amount + 1 << 56)` on `avail` (credits never carry into the tags because a
//! lane's outstanding credits stay below 2^40); apply the stores; clear the journal. A
//! crash before the `fetch_add` leaves `stag` unchanged: recovery drops the entry. After
//! it: recovery re-applies the (idempotent) stores.
//!
//! **revoke** (sidecar): journal, then CAS `avail` (credits -= x, stag := new); if the CAS
//! loses to the owner the entry is dropped and retried; then stores; clear. Same recovery.
//! Credits in `local` are the owner's; a revoke that wanted more sets the lane's flush
//! request, and the owner flushes `local` at its next reserve.
//!
//! **harvest** (sidecar): moves `consumed` / `overrun` growth since the last harvest from
//! the pools' carved to their consumed counters: absolute stores, journaled.
//!
//! **reclaim** (sidecar; `reclaim.rs`), for a lane whose claim names a holder whose lock
//! the sidecar can take (the process is gone) or whose file is gone:
//! 1. CAS claim owned -> reclaiming (the sidecar is now the lane's only writer);
//! 2. finish a half-done transfer; decide a `RESERVING` slot by its `local` before-value;
//!    finish a `SETTLING` or `SETTLING_REC` slot; settle `COMMITTED` slots as commits and `HELD` /
//!    `CANCELLED` ones as cancels (the call's outcome is unknown; its credits go back);
//! 3. return `local` to the pools (journaled), revoke all of `avail` (both booked as
//!    `reclaimed`), harvest;
//! 4. clear the key and pool list; claim := free, keeping the generation (the next claim
//!    bumps it, so nothing made under this claim matches the next one).
//!
//! Each step is decided by state (claim word, slot states, before-values, tags, journal),
//! so a sidecar that dies mid-reclaim reruns it and each credit returns exactly once.
//!
//! ## Memory ordering
//!
//! Slot and intent fields are written Relaxed and published by the Release store (or
//! CAS) of the state word; readers load the state with Acquire. The ring publishes records with a
//! Release head store and frees them with a Release tail store. The `avail` CASes are
//! AcqRel. Nothing needs a store-load fence (loom treats SeqCst as AcqRel): no decision
//! depends on a store becoming visible before a later load by the same thread; recovery
//! runs after the owner is dead (its stores are complete), and concurrent live parties
//! only meet in single-word read-modify-writes.
//!
//! ## Proofs
//!
//! The loom models in `src/loom_tests.rs` run reserve/commit/cancel against top-up and
//! revoke, a flush against a revoke, a crash after every step of pull, take, settle,
//! cancel and flush followed by reclaim, a sidecar crash after every step of top-up,
//! revoke and reclaim followed by journal recovery (and a second reclaim), a crash after
//! every step of the owner's record-intent commit followed by reclaim (also with the
//! sidecar dying at every step of that reclaim and reclaiming again), the remote
//! commit and pending-mask path, the ring drain (against both settles), and the
//! price-book seqlock, asserting the equations exactly. Each crash model asserts that its crash point was reached. Two
//! models cover claims: a stale owner whose lane was reclaimed and claimed again (same slot
//! reused) never settles into it, from its owner thread or another; and two processes
//! racing to claim a lane that the sidecar is reclaiming get it once, with a fresh
//! generation.
//! `src/loom_attr.rs` models the attribution protocols: two processes interning one name
//! (each id names what it asked for), a name writer killed mid-write and cleaned up by the
//! sidecar, two processes opening one task, two processes completing one task (exactly one
//! work unit, also when the winner dies before its commit), and a counted call on a task
//! lane racing a `give_calls` with a crash at every step followed by reclaim (the task's
//! calls balance, a call counts iff its reservation was taken, unused calls go back).
//! `--cfg tollgate_broken` replaces the pull's CAS on `avail` with a load and a store;
//! the model behind `loom_reserve_races_top_up` must then fail with its "no top-up lost"
//! assertion, which `loom_broken_variant_is_caught` (run by `.ci/loom.sh`) checks.
