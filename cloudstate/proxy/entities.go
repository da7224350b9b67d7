package proxy

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// command is one call routed to an entity: a request from a client, a
// forward or a side effect.
type command struct {
	method   *method
	entityID string
	payload  []byte
	ctx      context.Context
	// reply receives the one outcome of a unary command; nil for a streamed
	// command.
	reply chan outcome
	// call is the client's end of a streamed command; nil for a unary one.
	call *streamCall
}

// outcome is what an entity tells a caller: one reply, forward or failure,
// with the side effects to run first (the synchronous ones) or alongside.
type outcome struct {
	reply   *anypb.Any
	forward *protocol.Forward
	effects []*protocol.SideEffect
	// err fails the command, or ends a streamed call with an error.
	err error
	// end ends a streamed call, with err or OK.
	end bool
}

// streamCall is the client's end of a streamed command. Only the entity
// sends on out; it keeps one slot free so that the final outcome always
// fits without blocking.
type streamCall struct {
	out  chan outcome
	done chan struct{}
	once sync.Once
	// signal tells the owning entity that the caller left; set before the
	// command is queued.
	signal chan struct{}
}

func newStreamCall(buffer int) *streamCall {
	return &streamCall{
		out:  make(chan outcome, buffer+1),
		done: make(chan struct{}),
	}
}

// close tells the entity that the caller stopped reading. It is safe to
// call more than once.
func (c *streamCall) close() {
	c.once.Do(func() {
		close(c.done)
		if c.signal != nil {
			select {
			case c.signal <- struct{}{}:
			default:
			}
		}
	})
}

// closed reports whether the caller left.
func (c *streamCall) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// entities routes commands to the active entities, starting them on demand
// and forgetting them when they passivate or fail.
type entities struct {
	cfg      *Config
	log      *slog.Logger
	ctx      context.Context
	fn       *function
	replicas *Replicas
	metrics  *metrics
	// effects runs side effects that no caller waits for; it must not block.
	effects  func([]*protocol.SideEffect)
	draining chan struct{}
	stopping chan struct{}
	wg       sync.WaitGroup

	// mu guards the fields below. It is never held across I/O.
	mu     sync.Mutex
	active map[string]*entity
	closed bool
	drain  bool
}

func newEntities(ctx context.Context, cfg *Config, fn *function, r *Replicas,
	m *metrics) *entities {
	return &entities{
		cfg:      cfg,
		log:      cfg.Logger,
		ctx:      ctx,
		fn:       fn,
		replicas: r,
		metrics:  m,
		draining: make(chan struct{}),
		stopping: make(chan struct{}),
		active:   make(map[string]*entity),
	}
}

var (
	errShuttingDown = connect.NewError(connect.CodeUnavailable,
		errors.New("proxy shutting down"))
	errEntityDeleted = connect.NewError(connect.CodeNotFound, errDeleted)
)

// submit queues cmd on its entity, starting the entity when it is not
// active. It never blocks: a full queue answers ResourceExhausted.
func (es *entities) submit(cmd *command) error {
	k := cmd.method.svc.name + "\x00" + cmd.entityID
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.closed || (es.drain && cmd.call != nil) {
		return errShuttingDown
	}
	e := es.active[k]
	if e == nil {
		if len(es.active) >= es.cfg.MaxEntities {
			return connect.NewError(connect.CodeResourceExhausted,
				errors.New("too many active entities"))
		}
		e = newEntity(es, k, cmd.method.svc, cmd.entityID)
		es.active[k] = e
		es.metrics.entities.Inc()
		es.wg.Add(1)
		go e.run()
	}
	if cmd.call != nil {
		cmd.call.signal = e.cancels
	}
	select {
	case e.inbox <- cmd:
		return nil
	default:
		return connect.NewError(connect.CodeResourceExhausted,
			errors.New("too many commands queued for this entity"))
	}
}

// runEffects runs side effects in the background.
func (es *entities) runEffects(effects []*protocol.SideEffect) {
	if len(effects) > 0 && es.effects != nil {
		es.effects(effects)
	}
}

// remove forgets e. With idle set it does so only when nothing is queued
// for e, and reports whether it did; once removed, nothing more is queued
// for e.
func (es *entities) remove(e *entity, idle bool) bool {
	es.mu.Lock()
	defer es.mu.Unlock()
	if idle && len(e.inbox) > 0 {
		return false
	}
	if es.active[e.mapKey] == e {
		delete(es.active, e.mapKey)
		es.metrics.entities.Dec()
	}
	return true
}

// count returns the number of active entities.
func (es *entities) count() int {
	es.mu.Lock()
	defer es.mu.Unlock()
	return len(es.active)
}

// drainStreams ends every open streamed call and refuses new ones.
func (es *entities) drainStreams() {
	es.mu.Lock()
	defer es.mu.Unlock()
	if !es.drain {
		es.drain = true
		close(es.draining)
	}
}

// stop stops every entity, failing what they still hold, and waits for
// them until ctx is done.
func (es *entities) stop(ctx context.Context) error {
	es.mu.Lock()
	if !es.closed {
		es.closed = true
		close(es.stopping)
	}
	es.mu.Unlock()
	done := make(chan struct{})
	go func() {
		es.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
