"""What one verification round contributed to the output: the unit τ is counted in.

A round drafts k tokens, the target accepts n of them and yields one more (the token corrected at
the first rejection, or the bonus token when all k survive). What the round *commits* is what is
left after the output is cut at the first EOS (kept) and at ``max_new_tokens``:

- nothing cut: n + 1 tokens, n of them accepted drafts; positions 1..k were all judged (a position
  after the first rejection counts as not accepted, as in the reference's per-position rates);
- an accepted draft was EOS at position e: e tokens, no bonus after it; positions after e were
  never meaningful, so only 1..e were judged (the reference's ``effective_proposal_length``);
- cut by ``max_new_tokens`` after c kept drafts: c tokens; the round is *censored* at c — the
  positions after the cut are neither accepted nor rejected in the statistics.

Invariant per decoded turn: ``sum(committed) + 1 == len(generated tokens)`` (the 1 is the token the
target picks after the prefill). Module kept free of torch so the results schema can import it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoundOutcome:
    committed: int  # tokens the round appended to the output (≥ 1): the τ unit
    accepted: int  # drafted tokens among them (the corrected / bonus token is not a draft)
    judged: int  # draft positions 1..judged whose verdict enters per-position acceptance
    drafted: int  # tokens the round put before the target (k, or fewer under a draft-length policy)

    @classmethod
    def of(cls, num_accepted: int, num_drafted: int, appended: int) -> RoundOutcome:
        """From the verdict (n accepted of k drafted) and the tokens actually appended after cutting.

        Raises ValueError when ``appended`` is not in 1..n+1 (a round always commits a token).
        """
        if not 1 <= appended <= num_accepted + 1:
            raise ValueError(f"a round with {num_accepted} accepted drafts cannot append {appended} tokens")
        if appended == num_accepted + 1:
            return cls(appended, num_accepted, num_drafted, num_drafted)
        return cls(appended, appended, appended, num_drafted)  # cut at an accepted EOS or at max_new_tokens
