//! # The fast-path protocol, and why it is exact under crashes
//!
//! ## Invariant
//!
//! No credit is created or destroyed. At every instant, for every lane `l` and pool `p`:
//!
//! ```text
//! lane:  topped_up(l) = avail(l) + held(l) + consumed(l) + revoked(l) + reclaimed(l)
//! pool:  granted(p) + overrun(p) = available(p) + carved(p) + consumed(p) + returned(p)
//!        carved(p) = sum over lanes l carved from p of
//!                    topped_up(l) - revoked(l) - reclaimed(l) - harvested(l)
//! ```
//!
//! `held(l)` is the sum of the lane's reservation slots, with a half-done operation
//! decided by its tag (below) exactly as reclaim decides it. `consumed(l)` counts the
//! part of each actual cost that the reservation paid for; the part past the reservation
//! (an overrun) is counted in `overrun(l)` and charged to the pools directly, so an
//! overrun can exceed a cap by at most the overruns themselves. And: every credit held by
//! a dead process is returned to the pools by the sidecar, exactly once.
//! [`crate::audit`] reads every term; tests and loom models assert the equations exactly.
//!
//! ## Who writes what
//!
//! * The **sidecar** is the single writer of pools, of each lane's sidecar line
//!   (`topped_up`, `revoked`, `reclaimed`, ring tail, harvest marks, pool list) and of the
//!   journal. Its multi-word updates go through the intent journal ([`crate::journal`]).
//! * A lane is claimed by one agent **process** (claim word = pid + start time); at any
//!   moment one **thread** of it owns the lane (per-thread lanes, handed to a new thread
//!   when the old one exits). Only the owner allocates slots, settles them, and writes
//!   `consumed`, `overrun`, the ring head and the lost counter (plain stores, single
//!   writer).
//! * `avail` is the one word both write: `[stag:8 | otag:16 | credits:40]`. The owner
//!   changes it only by CAS, stamping its **owner tag** `otag`; the sidecar only by
//!   `fetch_add` (top-up) or CAS (revoke), stamping its **sidecar tag** `stag` and never
//!   touching `otag`. Each side's tag therefore names that side's last effect on the word.
//! * A slot's state word `[tag:16 | kind:8]` records the **intent** (the amounts, the
//!   before-values, the tag the effect will carry) before the effect.
//!
//! The owner is sequential, so at most one owner operation per lane is in flight; its tag
//! is `t = otag + 1`, which differs from the tag in `avail` until its CAS lands. That
//! single comparison is how reclaim decides whether a dead owner's CAS happened.
//!
//! ## Steps, and why a crash at each is safe
//!
//! **reserve** (owner; [`crate::lane`]):
//! 1. write amount, tokens, meta into a free slot; state := `RESERVING{t}`.
//!    Crash here: `avail.otag != t`, so reclaim decides "not debited" and frees the slot.
//! 2. CAS `avail`: credits -= amount, otag := t. (Fails if short: state := `EMPTY`, slow
//!    path.) Crash here: `avail.otag == t`, so reclaim decides "debited": the slot holds
//!    `amount`, which reclaim returns.
//! 3. state := `HELD{t}`. The reservation exists; a crash now leaves a held slot.
//!
//! The task budget is debited before step 1 and refunded if the lane refuses; it is
//! process-local (a task dies with its process), so it is not part of the equation.
//!
//! **commit / cancel** on the owner thread = settle (below) directly. On another thread:
//! write the actual cost, then CAS state `HELD{t}` to `COMMITTED{t}` / `CANCELLED{t}`
//! (one word: either the commit happened or it did not), then set the slot's bit in the
//! lane's pending mask. The owner settles pending slots at its next reserve or when its
//! thread exits; reclaim settles them if the process dies. A crash between the CAS and
//! the mask bit leaves a committed slot, which reclaim finds by scanning states.
//!
//! **settle** (owner, or the sidecar acting as owner of a dead lane):
//! 1. record actual and the before-values of `consumed`, `overrun` and the ring head in
//!    the slot; state := `SETTLING{t2}`, `t2 = otag + 1`.
//! 2. `consumed := before + paid` (paid = min(actual, reserved)). Done iff `consumed !=
//!    before`.
//! 3. `overrun := before + (actual - paid)`. Done iff `overrun != before`.
//! 4. push the usage record (or count it lost when the ring is full). Done iff the head
//!    moved.
//! 5. CAS `avail`: credits += reserved - paid, otag := t2. Done iff `avail.otag == t2`.
//! 6. state := `EMPTY`.
//!
//! Every step is decided by its own word, so finishing a half-done settle redoes exactly
//! the missing steps ([`crate::lane`]'s `finish_settling` is the same code for both).
//!
//! **top-up** (sidecar; [`crate::carve`]): check every pool of the lane has `amount`
//! above the tier's floor (else record the binding limit in the lane); journal the
//! absolute post-values (pool available/carved, lane `topped_up`) and the new `stag`;
//! `fetch_add(amount + 1 << 56)` on `avail` (credits never carry into the tags because a
//! lane's outstanding credits stay below 2^40); apply the stores; clear the journal. A
//! crash before the `fetch_add` leaves `stag` unchanged: recovery drops the entry. After
//! it: recovery re-applies the (idempotent) stores.
//!
//! **revoke** (sidecar): journal, then CAS `avail` (credits -= x, stag := new); if the CAS
//! loses to the agent the entry is dropped and retried; then stores; clear. Same recovery.
//!
//! **harvest** (sidecar): moves `consumed` / `overrun` growth since the last harvest
//! from the pools' carved to their consumed counters: stores only, journaled.
//!
//! **reclaim** (sidecar; [`crate::reclaim`]), for a lane whose claim names a process that
//! is not running (same pid and start time):
//! 1. CAS claim owned -> reclaiming (the sidecar is now the lane's only writer);
//! 2. decide a `RESERVING{t}` slot by `avail.otag == t`; finish a `SETTLING` slot;
//!    settle `COMMITTED` slots as commits and `HELD` / `CANCELLED` ones as cancels (the
//!    call's outcome is unknown; its credits go back);
//! 3. revoke all of `avail`, booked as `reclaimed`; harvest;
//! 4. clear the key and pool list; claim := free.
//!
//! Each step is decided by state (claim word, slot states, tags, journal), so a sidecar
//! that dies mid-reclaim reruns it and each credit returns exactly once.
//!
//! ## Memory ordering
//!
//! Slot fields are written Relaxed and published by the Release store (or CAS) of the
//! state word; readers load the state with Acquire. The ring publishes records with a
//! Release head store and frees them with a Release tail store. The `avail` CASes are
//! AcqRel. Nothing needs a store-load fence (loom treats SeqCst as AcqRel): no decision
//! depends on a store becoming visible before a later load by the same thread; recovery
//! runs after the owner is dead (its stores are complete), and concurrent live parties
//! only meet in single-word read-modify-writes.
//!
//! ## Proofs
//!
//! The loom models in `src/loom_tests.rs` run reserve/commit/cancel against top-up and
//! revoke, a crash after every step k of reserve, settle, top-up and revoke followed by
//! recovery, the remote commit and pending-mask path, the ring drain, and the price-book
//! seqlock, asserting the equations exactly. `--cfg tollgate_broken` replaces the
//! reserve CAS with a load and a store; the model `loom_reserve_races_top_up` must then
//! fail, and `.ci/loom.sh` checks that it does.
