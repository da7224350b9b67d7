package gateway

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// hub keeps one upstream stream open per key for as long as at least one
// caller holds that key, and shares what the stream says with every holder.
// The stream is opened at the first hold, re-opened after a jittered
// exponential backoff whenever it ends while still held, and cancelled at
// the last release. There is never more than one stream per key: a stream
// for a key held again while its previous stream is still closing waits for
// that one to end.
//
// A hub is safe for concurrent use.
type hub[V comparable] struct {
	// stream is a short name of the upstream stream, for logs.
	stream string
	log    *slog.Logger
	// ctx is the parent of every stream; cancelling it ends them all.
	ctx        context.Context
	backoffMin time.Duration
	backoffMax time.Duration
	// initial is the value of a key before its stream says anything, and
	// lost its value after the stream ends, until it says something again.
	initial, lost V
	// open runs one upstream stream for key until it ends and returns why.
	// It calls emit, on the goroutine that called it, for every value the
	// stream reports. attempt counts the failures since the stream last worked.
	open func(ctx context.Context, key string, attempt int, emit func(V)) error

	mu sync.Mutex
	// entries, closing and nextID are guarded by mu.
	entries map[string]*hubEntry[V]
	closing map[string]chan struct{}
	nextID  uint64
}

// hubEntry is the state of one held key.
type hubEntry[V comparable] struct {
	refs      int
	value     V
	observers map[uint64]func(V)
	cancel    context.CancelFunc
	// done is closed when the entry's stream loop has returned.
	done chan struct{}
}

func (h *hub[V]) init() {
	h.entries = make(map[string]*hubEntry[V])
	h.closing = make(map[string]chan struct{})
}

// hold holds key until the returned release is called, which may be called
// more than once. When observe is not nil, it is called with the key's
// current value at once, before hold returns, and again after every change.
// observe is called with the hub's lock held, one call at a time: it must
// not block and must not call into the hub.
func (h *hub[V]) hold(key string, observe func(V)) (release func()) {
	h.mu.Lock()
	defer h.mu.Unlock()

	e := h.entries[key]
	if e == nil {
		ctx, cancel := context.WithCancel(h.ctx)
		e = &hubEntry[V]{
			value:     h.initial,
			observers: make(map[uint64]func(V)),
			cancel:    cancel,
			done:      make(chan struct{}),
		}
		h.entries[key] = e
		prev := h.closing[key]
		delete(h.closing, key)
		go h.run(ctx, key, e, prev)
	}
	e.refs++
	h.nextID++
	id := h.nextID
	if observe != nil {
		e.observers[id] = observe
		observe(e.value)
	}

	var once sync.Once
	return func() { once.Do(func() { h.release(key, e, id) }) }
}

func (h *hub[V]) release(key string, e *hubEntry[V], id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(e.observers, id)
	e.refs--
	if e.refs > 0 {
		return
	}
	e.cancel()
	delete(h.entries, key)
	h.closing[key] = e.done
}

// set records a new value for e and tells its observers when it changed.
func (h *hub[V]) set(e *hubEntry[V], v V) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e.value == v {
		return
	}
	e.value = v
	for _, observe := range e.observers {
		observe(v)
	}
}

// run keeps the stream for key open until ctx is done. prev, when not nil,
// is the done channel of the key's previous entry, still closing.
func (h *hub[V]) run(ctx context.Context, key string, e *hubEntry[V], prev <-chan struct{}) {
	defer func() {
		h.mu.Lock()
		if h.closing[key] == e.done {
			delete(h.closing, key)
		}
		h.mu.Unlock()
		close(e.done)
	}()
	if prev != nil {
		select {
		case <-prev:
		case <-ctx.Done():
			return
		}
	}

	b := backoff{min: h.backoffMin, max: h.backoffMax}
	failures := 0
	for {
		worked := false
		err := h.open(ctx, key, failures, func(v V) {
			if !worked {
				worked = true
				b.reset()
				if failures > 0 {
					h.log.Info("upstream stream recovered", "stream", h.stream, "key", key)
				}
				failures = 0
			}
			h.set(e, v)
		})
		if ctx.Err() != nil {
			return
		}
		h.set(e, h.lost)
		if failures == 0 {
			h.log.Warn("upstream stream ended", "stream", h.stream, "key", key, "err", err)
		} else {
			h.log.Debug("upstream stream ended", "stream", h.stream, "key", key, "err", err)
		}
		failures++
		if !sleep(ctx, b.next()) {
			return
		}
	}
}
