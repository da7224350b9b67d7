package proxy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// maxForwardDepth bounds a chain of forwards and side effects, so that a
// function forwarding in a loop cannot keep the proxy busy forever.
const maxForwardDepth = 8

// maxEffectBatches bounds the batches of asynchronous side effects running
// at once; more are dropped and logged.
const maxEffectBatches = 1024

// effectTimeout bounds one batch of asynchronous side effects.
const effectTimeout = time.Minute

// call runs a unary command on its entity and waits for the outcome. It runs
// the outcome's side effects, the synchronous ones before it returns, and
// follows a forward. It returns the reply payload.
func (p *Proxy) call(ctx context.Context, m *method, id string, payload []byte,
	depth int) (*anypb.Any, error) {
	reply := make(chan outcome, 1)
	cmd := &command{method: m, entityID: id, payload: payload, ctx: ctx, reply: reply}
	if err := p.ents.submit(cmd); err != nil {
		return nil, err
	}
	var o outcome
	select {
	case o = <-reply:
	case <-ctx.Done():
		// The entity answers every command; the side effects still run.
		go func() {
			o := <-reply
			p.runEffects(o.effects, depth+1)
		}()
		return nil, contextError(ctx.Err())
	}
	p.sideEffects(ctx, o.effects, depth+1)
	switch {
	case o.err != nil:
		return nil, o.err
	case o.forward != nil:
		return p.forward(ctx, o.forward, depth+1)
	}
	return o.reply, nil
}

// forward runs the command a function forwarded to, or asked for as a side
// effect, and returns its reply.
func (p *Proxy) forward(ctx context.Context, f *protocol.Forward, depth int) (*anypb.Any, error) {
	if depth > maxForwardDepth {
		return nil, connect.NewError(connect.CodeInternal,
			fmt.Errorf("chain of forwards longer than %d", maxForwardDepth))
	}
	cat := p.catalog.Load()
	m, ok := cat.lookup(f.GetServiceName(), f.GetCommandName())
	if !ok {
		msg := fmt.Sprintf("Forward or side effect to unknown method %s/%s",
			f.GetServiceName(), f.GetCommandName())
		p.fn.report(p.baseCtx, msg)
		return nil, connect.NewError(connect.CodeInternal, errors.New(
			"user function forwarded to an unknown method"))
	}
	if m.streamed {
		// TODO: forwards to server-streaming methods are refused; following
		// one would turn a unary call into a stream.
		return nil, connect.NewError(connect.CodeUnimplemented, fmt.Errorf(
			"forward to server-streaming method %s is not supported", m.desc.FullName()))
	}
	payload := f.GetPayload()
	if payload.GetTypeUrl() != m.inputURL {
		p.fn.report(p.baseCtx, fmt.Sprintf("Forward to %s/%s carries %q, want %q",
			m.svc.name, m.name, payload.GetTypeUrl(), m.inputURL))
		return nil, connect.NewError(connect.CodeInternal, errors.New(
			"user function forwarded a payload of the wrong type"))
	}
	msg := dynamicpb.NewMessage(m.desc.Input())
	if err := proto.Unmarshal(payload.GetValue(), msg); err != nil {
		return nil, connect.NewError(connect.CodeInternal,
			fmt.Errorf("decode forwarded payload: %w", err))
	}
	id, err := m.entityID(msg)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("forward: %w", err))
	}
	return p.call(ctx, m, id, payload.GetValue(), depth)
}

// sideEffects runs the synchronous side effects, in order, then starts the
// others without waiting. Failures are logged.
func (p *Proxy) sideEffects(ctx context.Context, effects []*protocol.SideEffect, depth int) {
	var async []*protocol.SideEffect
	for _, se := range effects {
		if !se.GetSynchronous() {
			async = append(async, se)
			continue
		}
		p.sideEffect(ctx, se, depth)
	}
	p.runEffects(async, depth)
}

// runEffects runs side effects in the background, synchronous ones
// included, when no caller waits for them.
func (p *Proxy) runEffects(effects []*protocol.SideEffect, depth int) {
	if len(effects) == 0 {
		return
	}
	select {
	case p.effectSlots <- struct{}{}:
	default:
		p.log.Warn("side effects dropped: too many running", "count", len(effects))
		p.metrics.errors.WithLabelValues("side_effect").Add(float64(len(effects)))
		return
	}
	go func() {
		defer func() { <-p.effectSlots }()
		ctx, cancel := context.WithTimeout(p.baseCtx, effectTimeout)
		defer cancel()
		for _, se := range effects {
			p.sideEffect(ctx, se, depth)
		}
	}()
}

// sideEffect runs one side effect and logs its failure.
func (p *Proxy) sideEffect(ctx context.Context, se *protocol.SideEffect, depth int) {
	f := &protocol.Forward{
		ServiceName: se.GetServiceName(),
		CommandName: se.GetCommandName(),
		Payload:     se.GetPayload(),
	}
	if _, err := p.forward(ctx, f, depth); err != nil {
		p.metrics.errors.WithLabelValues("side_effect").Inc()
		p.log.Warn("side effect failed", "service", se.GetServiceName(),
			"command", se.GetCommandName(), "err", err)
	}
}

// contextError turns a context's error into a connect error.
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	return connect.NewError(connect.CodeCanceled, err)
}
