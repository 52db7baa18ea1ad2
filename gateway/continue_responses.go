package gateway

import (
	"bytes"
	"encoding/json"

	"github.com/herd-llm/herd/nodeagent/agentapi"
)

// Continuation of a Responses API stream (/v1/responses, stream: true). Its events carry more
// framing than a chat chunk: a response id and created_at, numbered events (sequence_number),
// output items with ids and output_index, and a final response.completed that lists the whole
// output. So the gateway reads, from the events the client has, the state the continuing agent
// needs to follow them (agentapi.ResponsesState): the next sequence_number, the items (their
// ids, kinds, text, which one is open) and the model; the agent's Responses writer then sends no
// second response.created, continues the open item with the new node's deltas, and closes the
// response with the items whole and usage counting both nodes (nodeagent/responses.Resume).
//
// Not continued: a function call among the items (as with chat, no backend resumes one), a
// content part other than the first, reasoning summaries (a chat backend writes none to follow),
// or a message already closed without response.completed after it.

// responsesEvent is what the continuation reads of a Responses stream event.
type responsesEvent struct {
	Type     string `json:"type"`
	Seq      *int64 `json:"sequence_number"`
	Response *struct {
		ID        string `json:"id"`
		CreatedAt int64  `json:"created_at"`
		Model     string `json:"model"`
	} `json:"response"`
	ItemID       string `json:"item_id"`
	ContentIndex int    `json:"content_index"`
	Item         *struct {
		ID   string `json:"id"`
		Type string `json:"type"`
	} `json:"item"`
	Delta string `json:"delta"`
}

// readResponsesPartial reads the kept events of a Responses stream; events is how many the
// client has (the next sequence number where the events carry none). why says what makes the
// answer impossible to continue ("" when it can be).
func readResponsesPartial(kept []byte, events int) (p *partial, why string) {
	p = &partial{}
	st := &agentapi.ResponsesState{Seq: int64(events)}
	seqSeen := false
	find := func(id string) *agentapi.ResponsesItem {
		for i := range st.Items {
			if st.Items[i].ID == id {
				return &st.Items[i]
			}
		}
		return nil
	}
	for line := range bytes.Lines(kept) {
		data, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		var ev responsesEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			return p, "an event the client has is not JSON"
		}
		if ev.Seq != nil {
			st.Seq, seqSeen = *ev.Seq+1, true
		}
		switch ev.Type {
		case "response.created", "response.in_progress":
			if r := ev.Response; r != nil && p.id == "" {
				p.id, p.created, st.Model = r.ID, r.CreatedAt, r.Model
			}
		case "response.completed", "response.incomplete":
			p.finished = true
		case "response.output_item.added":
			if ev.Item == nil {
				return p, "an output item without its id"
			}
			if ev.Item.Type != "message" && ev.Item.Type != "reasoning" {
				return p, "a " + ev.Item.Type + " item was under way (only text and reasoning are continued)"
			}
			st.Items = append(st.Items, agentapi.ResponsesItem{ID: ev.Item.ID, Type: ev.Item.Type, Open: true})
		case "response.content_part.added", "response.content_part.done":
			it := find(ev.ItemID)
			if it == nil || ev.ContentIndex != 0 {
				return p, "a content part the continuation cannot follow"
			}
			it.PartOpen = ev.Type == "response.content_part.added"
		case "response.output_text.delta", "response.reasoning_text.delta":
			it := find(ev.ItemID)
			if it == nil || !it.Open || ev.ContentIndex != 0 {
				return p, "a text delta the continuation cannot follow"
			}
			it.Text += ev.Delta
			if ev.Delta != "" {
				p.tokens++
			}
		case "response.output_item.done":
			if ev.Item != nil {
				if it := find(ev.Item.ID); it != nil {
					it.Open, it.PartOpen = false, false
				}
			}
		case "response.reasoning_summary_part.added", "response.reasoning_summary_text.delta":
			return p, "a reasoning summary was under way"
		case "error", "response.failed":
			// The failure itself: cut before it reached the client (responsesErrorEvent).
		}
	}
	if !seqSeen {
		st.Seq = int64(events)
	}
	p.resp = st
	if p.finished {
		return p, ""
	}
	if p.id == "" {
		return p, "the client has no response.created"
	}
	for i := range st.Items {
		it := &st.Items[i]
		switch {
		case it.Type == "message" && !it.Open:
			return p, "a message was complete but response.completed did not follow it"
		case it.Type == "message":
			p.content.WriteString(it.Text)
		default:
			p.reasoning.WriteString(it.Text)
		}
	}
	return p, ""
}

// responsesErrorEvent finds the first event in out (whole SSE events of a Responses stream) that
// reports a failure (an "error" event, response.failed, or an OpenAI error object, which an
// agent's proxy writes when a backend's stream breaks): it returns where that event starts and
// the error's message, or -1.
func responsesErrorEvent(out []byte) (int, string) {
	if !bytes.Contains(out, []byte(`error`)) && !bytes.Contains(out, []byte(`response.failed`)) {
		return -1, ""
	}
	for at := 0; at < len(out); {
		ev := out[at:]
		next := len(out)
		if i := bytes.Index(ev, sseEventEnd); i >= 0 {
			ev, next = ev[:i], at+i+len(sseEventEnd)
		}
		if bytes.Contains(ev, []byte(`"error"`)) || bytes.Contains(ev, []byte(`response.failed`)) {
			for line := range bytes.Lines(ev) {
				d, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("data:"))
				if !ok {
					continue
				}
				var e struct {
					Type    string          `json:"type"`
					Message string          `json:"message"`
					Error   json.RawMessage `json:"error"`
					// An agent's proxy ends a backend's broken stream with an OpenAI error object
					// ({"error": {...}}) whatever the route: a failure too.
					Response *struct {
						Error *struct {
							Message string `json:"message"`
						} `json:"error"`
					} `json:"response"`
				}
				if json.Unmarshal(bytes.TrimSpace(d), &e) != nil {
					continue
				}
				switch {
				case len(e.Error) > 0 && string(e.Error) != "null":
					return at, "the backend sent an error event: " + errorMessageOf(e.Error)
				case e.Type == "error":
					return at, "the backend sent an error event: " + e.Message
				case e.Type == "response.failed":
					msg := "the response failed"
					if e.Response != nil && e.Response.Error != nil {
						msg += ": " + e.Response.Error.Message
					}
					return at, "the backend sent " + msg
				}
			}
		}
		at = next
	}
	return -1, ""
}

// Responses streams end with one of these events (and no [DONE]).
var responsesEnds = [...][]byte{
	[]byte(`"type":"response.completed"`), []byte(`"type":"response.incomplete"`), []byte(`"type":"response.failed"`),
	[]byte("event: response.completed"), []byte("event: response.incomplete"), []byte("event: response.failed"),
}

// endsResponses reports whether b holds a Responses stream's last event.
func endsResponses(b []byte) bool {
	for _, e := range responsesEnds {
		if bytes.Contains(b, e) {
			return true
		}
	}
	return false
}
