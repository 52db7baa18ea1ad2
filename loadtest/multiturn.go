package loadtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The multi-turn workload's parameters, pinned so that every run and every policy sees the same
// conversations (with the same seed). Sizes are in words of the generator's vocabulary; herd's
// simulated nodes count a token per 4 bytes, which makes about 1.4 tokens a word here (Llama 3's
// tokenizer makes about 1.3 of English).
const (
	// MultiTurnPresets is the number of distinct system prompts; user u belongs to preset
	// u mod MultiTurnPresets, so each is shared by a group of users (the seed's "offline custom
	// GPTs").
	MultiTurnPresets = 4
	// MultiTurnSystemWords sizes each preset's system prompt (≈ 2,000 simulated tokens).
	MultiTurnSystemWords = 1400
	// MultiTurnTurns is a conversation's length in user turns; then the user starts a new one
	// under the same preset. Turn 16's prompt is ≈ 8,500 simulated tokens.
	MultiTurnTurns = 16
	// MultiTurnUserMinWords, MultiTurnUserMaxWords size a user turn; MultiTurnReplyWords the
	// assistant reply the history carries (≈ 430 simulated tokens a turn together).
	MultiTurnUserMinWords = 40
	MultiTurnUserMaxWords = 80
	MultiTurnReplyWords   = 250
	// MultiTurnMaxTokens is each request's max_tokens.
	MultiTurnMaxTokens = 128
	// MultiTurnUsers is the number of users in conversation, 12 per preset. The rate sets their
	// mean pause between an answer and the next turn (exponentially distributed): users ÷ rate,
	// 48 s at 1 req/s. A fixed population keeps what a node serves between two turns of one
	// conversation (users ÷ nodes requests) the same at every rate, so the rates differ in load
	// only.
	MultiTurnUsers = 48
	// MultiTurnContext is the per-slot context the simulated nodes need for these prompts.
	MultiTurnContext = 12288
)

// multiTurnThink is the mean think time at which users offer rate requests/s (answers taking no
// time): users ÷ rate.
func multiTurnThink(users int, rate float64) time.Duration {
	return time.Duration(float64(users) / rate * float64(time.Second))
}

// MultiTurnWarmUp is the warm-up of a multi-turn probe at rate (simulated time): one mean think
// time, so that every user has sent a turn and each conversation has been seen by the cluster,
// within [30 s, 120 s].
func MultiTurnWarmUp(rate float64) time.Duration {
	return min(max(multiTurnThink(MultiTurnUsers, rate), 30*time.Second), 120*time.Second)
}

// presetPrompts are the multi-turn workload's system prompts.
func (g *generator) presetPrompts() []string {
	out := make([]string, MultiTurnPresets)
	for i := range out {
		out[i] = fmt.Sprintf("You are assistant preset %d of the company. Follow these notes. ", i+1) +
			text(g.rng(0x5e7, uint64(i)), MultiTurnSystemWords)
	}
	return out
}

// turnMessages is turn `turn` (0-based) of user u's conversation number conv: the preset's
// system prompt, then the history, then the new user turn. A function of the seed and the three
// numbers only.
func (g *generator) turnMessages(u, conv, turn int) []chatMessage {
	id := uint64(u)<<20 | uint64(conv)
	msgs := make([]chatMessage, 0, 2+2*turn)
	msgs = append(msgs, chatMessage{Role: "system", Content: g.presets[u%MultiTurnPresets]})
	for t := 0; t <= turn; t++ {
		r := g.rng(0x7a1c+id, uint64(t))
		msgs = append(msgs, chatMessage{Role: "user", Content: fmt.Sprintf("Question %d: ", t+1) +
			text(r, MultiTurnUserMinWords+r.IntN(MultiTurnUserMaxWords-MultiTurnUserMinWords+1))})
		if t < turn {
			msgs = append(msgs, chatMessage{Role: "assistant", Content: text(r, MultiTurnReplyWords)})
		}
	}
	return msgs
}

// sessions runs the multi-turn users: each sends a turn, waits for the answer, pauses an
// exponentially distributed think time (mean users ÷ RPS) and sends the next, until the run's
// Duration. Users start
// at a random turn of their first conversation, at a random moment within the first think time,
// so the run begins near its steady state (WarmUp leaves the cold first turns out). It returns a
// function that collects the samples once wg is done.
func (r *runner) sessions(ctx, runCtx context.Context, epoch time.Time, wg *sync.WaitGroup) func() []Sample {
	o := r.o
	users := o.Users
	think := multiTurnThink(users, o.RPS)
	deadline := epoch.Add(o.Duration)
	per := make([][]Sample, users)
	var next atomic.Uint64
	// stop ends the users' think times at the deadline (its timer frees it then; collect too).
	stop, cancelStop := context.WithDeadline(ctx, deadline)
	for u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.Seed^0x5e55, uint64(u)))
			conv, turn := 0, rng.IntN(MultiTurnTurns)
			at := epoch.Add(time.Duration(rng.Float64() * float64(think)))
			timer := time.NewTimer(time.Until(at))
			defer timer.Stop()
			for {
				select {
				case <-stop.Done(): // the run ends, or its Duration does
					return
				case <-timer.C:
				}
				if !time.Now().Before(deadline) {
					return
				}
				body := r.gen.chatBody(r.gen.model, r.gen.turnMessages(u, conv, turn), MultiTurnMaxTokens)
				i := next.Add(1) - 1
				r.sent.Add(1)
				s := r.c.do(runCtx, i, body, o.Stream)
				per[u] = append(per[u], s)
				r.count(&s)
				if turn++; turn == MultiTurnTurns {
					conv, turn = conv+1, 0
				}
				timer.Reset(time.Duration(rng.ExpFloat64() * float64(think)))
			}
		}()
	}
	return func() []Sample {
		cancelStop()
		var all []Sample
		for _, p := range per {
			all = append(all, p...)
		}
		return all
	}
}
