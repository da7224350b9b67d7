package crdt

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	crdtv1 "github.com/cloudchat/cloudchat/gen/cloudchat/crdt/v1"
	"google.golang.org/protobuf/proto"
)

// Marshal encodes a replica, full state or delta, for other nodes, as a
// cloudchat.crdt.v1.Replica. The encoding is deterministic: equal replicas
// encode to equal bytes.
func Marshal(c CRDT) ([]byte, error) {
	r, err := baseOf(c)
	if err != nil {
		return nil, fmt.Errorf("marshal crdt: %w", err)
	}
	e := newEncoder(&r.cc)
	msg := &crdtv1.Replica{Nodes: e.names, Context: e.context(&r.cc)}
	if msg.Value, err = e.value(r.st); err != nil {
		return nil, fmt.Errorf("marshal crdt: %w", err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("marshal crdt: %w", err)
	}
	return b, nil
}

// encoder numbers the nodes of a replica's context.
type encoder struct {
	names []string
	index map[NodeID]uint32
	// slab is where dots are allocated, many at a time.
	slab []crdtv1.Dot
}

// newEncoder numbers the nodes of cc in sorted order. Every dot of a store
// is in its context, so these are all the nodes the replica names.
func newEncoder(cc *causalContext) *encoder {
	e := &encoder{index: make(map[NodeID]uint32)}
	for n := range cc.vv {
		e.index[n] = 0
	}
	for d := range cc.cloud {
		e.index[d.node] = 0
	}
	for n := range e.index {
		e.names = append(e.names, string(n))
	}
	slices.Sort(e.names)
	for i, n := range e.names {
		e.index[NodeID(n)] = uint32(i)
	}
	return e
}

// errDotOutsideContext reports a store dot that its context has not seen.
var errDotOutsideContext = errors.New("dot outside its context")

func (e *encoder) dot(d dot) (*crdtv1.Dot, error) {
	i, ok := e.index[d.node]
	if !ok {
		return nil, errDotOutsideContext
	}
	if len(e.slab) == 0 {
		e.slab = make([]crdtv1.Dot, 256)
	}
	pd := &e.slab[0]
	e.slab = e.slab[1:]
	pd.Node, pd.Seq = i, d.seq
	return pd, nil
}

// dots encodes ds sorted.
func (e *encoder) dots(ds []dot) ([]*crdtv1.Dot, error) {
	if len(ds) > 1 {
		ds = slices.Clone(ds)
		slices.SortFunc(ds, compareDots)
	}
	out := make([]*crdtv1.Dot, len(ds))
	for i, d := range ds {
		var err error
		if out[i], err = e.dot(d); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (e *encoder) context(cc *causalContext) *crdtv1.Context {
	out := &crdtv1.Context{}
	for n, s := range cc.vv {
		out.VersionVector = append(out.VersionVector, &crdtv1.Dot{Node: e.index[n], Seq: s})
	}
	slices.SortFunc(out.VersionVector, func(a, b *crdtv1.Dot) int {
		return cmp.Compare(a.Node, b.Node)
	})
	cloud := make([]dot, 0, len(cc.cloud))
	for d := range cc.cloud {
		cloud = append(cloud, d)
	}
	out.Cloud, _ = e.dots(cloud)
	return out
}

// sortedDots returns the keys of a dot-keyed map, sorted.
func sortedDots[V any](m map[dot]V) []dot {
	out := make([]dot, 0, len(m))
	for d := range m {
		out = append(out, d)
	}
	slices.SortFunc(out, compareDots)
	return out
}

// sortedKeys returns the keys of a string-keyed map, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (e *encoder) value(s store) (*crdtv1.Value, error) {
	switch s := s.(type) {
	case *counterStore:
		c := &crdtv1.Counter{}
		for _, d := range sortedDots(s.dots) {
			pd, err := e.dot(d)
			if err != nil {
				return nil, err
			}
			v := s.dots[d]
			c.Dots = append(c.Dots, &crdtv1.CounterDot{Dot: pd, Positive: v.p, Negative: v.n})
		}
		if s.k == KindGCounter {
			return &crdtv1.Value{Kind: &crdtv1.Value_Gcounter{Gcounter: c}}, nil
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Pncounter{Pncounter: c}}, nil
	case *setStore:
		el := &crdtv1.Elements{}
		for _, k := range sortedKeys(s.elems) {
			x := s.elems[k]
			ds, err := e.dots(x.dots)
			if err != nil {
				return nil, err
			}
			el.Elements = append(el.Elements, &crdtv1.Element{Value: x.value, Dots: ds})
		}
		if s.k == KindGSet {
			return &crdtv1.Value{Kind: &crdtv1.Value_Gset{Gset: el}}, nil
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Orset{Orset: el}}, nil
	case *registerStore:
		reg := &crdtv1.Register{}
		for _, d := range sortedDots(s.writes) {
			pd, err := e.dot(d)
			if err != nil {
				return nil, err
			}
			w := s.writes[d]
			reg.Writes = append(reg.Writes,
				&crdtv1.RegisterWrite{Dot: pd, Value: w.value, Timestamp: w.ts})
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Lwwregister{Lwwregister: reg}}, nil
	case *flagStore:
		ds, err := e.dots(s.dots)
		if err != nil {
			return nil, err
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Flag{Flag: &crdtv1.Flag{Dots: ds}}}, nil
	case *mapStore:
		m := &crdtv1.Map{}
		for _, k := range sortedKeys(s.entries) {
			x := s.entries[k]
			pe := &crdtv1.MapEntry{Key: x.key}
			for _, kind := range slices.Sorted(maps.Keys(x.vals)) {
				v := x.vals[kind]
				ds, err := e.dots(v.live)
				if err != nil {
					return nil, err
				}
				pv, err := e.value(v.st)
				if err != nil {
					return nil, err
				}
				pe.Values = append(pe.Values, &crdtv1.MapValue{Dots: ds, Value: pv})
			}
			m.Entries = append(m.Entries, pe)
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Ormap{Ormap: m}}, nil
	case *voteStore:
		vote := &crdtv1.Vote{}
		for _, d := range sortedDots(s.dots) {
			pd, err := e.dot(d)
			if err != nil {
				return nil, err
			}
			vote.Dots = append(vote.Dots, &crdtv1.VoteDot{Dot: pd, Counter: s.dots[d]})
		}
		return &crdtv1.Value{Kind: &crdtv1.Value_Vote{Vote: vote}}, nil
	}
	return nil, fmt.Errorf("unknown store %T", s)
}

// Unmarshal decodes what Marshal encoded. It validates its input and
// returns an error, never a partial value, when it is malformed: a missing
// value or unknown kind, a node list that is not sorted, distinct and
// non-empty, a dot with sequence number 0 or an unknown node, a context that
// is not compact, a store dot the context has not seen or that appears
// twice, duplicate elements, keys or map value kinds, an empty element or
// map value, a GCounter with decrements, a missing Any, or nesting deeper
// than MaxDepth.
func Unmarshal(b []byte) (CRDT, error) {
	var msg crdtv1.Replica
	if err := proto.Unmarshal(b, &msg); err != nil {
		return nil, fmt.Errorf("unmarshal crdt: %w", err)
	}
	d := &decoder{seen: make(map[dot]struct{})}
	if err := d.nodeList(msg.GetNodes()); err != nil {
		return nil, fmt.Errorf("unmarshal crdt: %w", err)
	}
	if err := d.context(msg.GetContext()); err != nil {
		return nil, fmt.Errorf("unmarshal crdt context: %w", err)
	}
	st, err := d.value(msg.GetValue(), 0)
	if err != nil {
		return nil, fmt.Errorf("unmarshal crdt value: %w", err)
	}
	return wrap(&replica{cc: d.cc, st: st}), nil
}

// maxSeq is the highest sequence number a replica may hold, far beyond what
// a node reaches, so that the next dot never wraps around.
const maxSeq = 1 << 62

// decoder decodes one replica, checking it as it goes.
type decoder struct {
	nodes []NodeID
	cc    causalContext
	// seen holds the store dots decoded so far.
	seen map[dot]struct{}
}

func (d *decoder) nodeList(names []string) error {
	for i, n := range names {
		if n == "" {
			return errors.New("empty node name")
		}
		if i > 0 && strings.Compare(names[i-1], n) >= 0 {
			return errors.New("node names not sorted and distinct")
		}
		d.nodes = append(d.nodes, NodeID(n))
	}
	return nil
}

func (d *decoder) dot(pd *crdtv1.Dot) (dot, error) {
	if pd == nil {
		return dot{}, errors.New("missing dot")
	}
	if int64(pd.GetNode()) >= int64(len(d.nodes)) {
		return dot{}, fmt.Errorf("dot names node %d of %d", pd.GetNode(), len(d.nodes))
	}
	if pd.GetSeq() == 0 || pd.GetSeq() > maxSeq {
		return dot{}, fmt.Errorf("dot sequence number %d out of range", pd.GetSeq())
	}
	return dot{node: d.nodes[pd.GetNode()], seq: pd.GetSeq()}, nil
}

func (d *decoder) context(pc *crdtv1.Context) error {
	for _, pd := range pc.GetVersionVector() {
		v, err := d.dot(pd)
		if err != nil {
			return fmt.Errorf("version vector: %w", err)
		}
		if _, dup := d.cc.vv[v.node]; dup {
			return fmt.Errorf("version vector names node %q twice", v.node)
		}
		if d.cc.vv == nil {
			d.cc.vv = make(map[NodeID]uint64)
		}
		d.cc.vv[v.node] = v.seq
	}
	for _, pd := range pc.GetCloud() {
		c, err := d.dot(pd)
		if err != nil {
			return fmt.Errorf("cloud: %w", err)
		}
		if c.seq <= d.cc.vv[c.node]+1 {
			return fmt.Errorf("cloud dot %s:%d not beyond the version vector", c.node, c.seq)
		}
		if _, dup := d.cc.cloud[c]; dup {
			return fmt.Errorf("cloud dot %s:%d twice", c.node, c.seq)
		}
		if d.cc.cloud == nil {
			d.cc.cloud = make(map[dot]struct{})
		}
		d.cc.cloud[c] = struct{}{}
	}
	return nil
}

// storeDot decodes a dot of a store: one the context has seen, used once.
func (d *decoder) storeDot(pd *crdtv1.Dot) (dot, error) {
	s, err := d.dot(pd)
	if err != nil {
		return dot{}, err
	}
	if !d.cc.contains(s) {
		return dot{}, fmt.Errorf("dot %s:%d: %w", s.node, s.seq, errDotOutsideContext)
	}
	if _, dup := d.seen[s]; dup {
		return dot{}, fmt.Errorf("dot %s:%d used twice", s.node, s.seq)
	}
	d.seen[s] = struct{}{}
	return s, nil
}

func (d *decoder) storeDots(pds []*crdtv1.Dot) ([]dot, error) {
	out := make([]dot, 0, len(pds))
	for _, pd := range pds {
		s, err := d.storeDot(pd)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (d *decoder) value(pv *crdtv1.Value, depth int) (store, error) {
	if depth > MaxDepth {
		return nil, errDepth
	}
	switch x := pv.GetKind().(type) {
	case *crdtv1.Value_Gcounter:
		return d.counter(KindGCounter, x.Gcounter)
	case *crdtv1.Value_Pncounter:
		return d.counter(KindPNCounter, x.Pncounter)
	case *crdtv1.Value_Gset:
		return d.set(KindGSet, x.Gset)
	case *crdtv1.Value_Orset:
		return d.set(KindORSet, x.Orset)
	case *crdtv1.Value_Lwwregister:
		s := &registerStore{}
		for _, w := range x.Lwwregister.GetWrites() {
			wd, err := d.storeDot(w.GetDot())
			if err != nil {
				return nil, fmt.Errorf("lwwregister: %w", err)
			}
			if w.GetValue() == nil {
				return nil, fmt.Errorf("lwwregister: %w", errNilAny)
			}
			s.set(wd, write{value: w.GetValue(), ts: w.GetTimestamp()})
		}
		return s, nil
	case *crdtv1.Value_Flag:
		ds, err := d.storeDots(x.Flag.GetDots())
		if err != nil {
			return nil, fmt.Errorf("flag: %w", err)
		}
		if len(ds) == 0 {
			ds = nil
		}
		return &flagStore{dots: ds}, nil
	case *crdtv1.Value_Ormap:
		return d.ormap(x.Ormap, depth)
	case *crdtv1.Value_Vote:
		s := &voteStore{}
		for _, v := range x.Vote.GetDots() {
			vd, err := d.storeDot(v.GetDot())
			if err != nil {
				return nil, fmt.Errorf("vote: %w", err)
			}
			s.set(vd, v.GetCounter())
		}
		return s, nil
	}
	return nil, errors.New("missing or unknown kind")
}

func (d *decoder) counter(kind Kind, c *crdtv1.Counter) (store, error) {
	s := &counterStore{k: kind}
	for _, cd := range c.GetDots() {
		dt, err := d.storeDot(cd.GetDot())
		if err != nil {
			return nil, fmt.Errorf("%v: %w", kind, err)
		}
		if kind == KindGCounter && cd.GetNegative() != 0 {
			return nil, errors.New("gcounter with decrements")
		}
		s.set(dt, counterVal{p: cd.GetPositive(), n: cd.GetNegative()})
	}
	return s, nil
}

func (d *decoder) set(kind Kind, el *crdtv1.Elements) (store, error) {
	s := &setStore{k: kind}
	for _, e := range el.GetElements() {
		if e.GetValue() == nil {
			return nil, fmt.Errorf("%v: %w", kind, errNilAny)
		}
		k := anyKey(e.GetValue())
		if _, dup := s.elems[k]; dup {
			return nil, fmt.Errorf("%v: element twice", kind)
		}
		ds, err := d.storeDots(e.GetDots())
		if err != nil {
			return nil, fmt.Errorf("%v: %w", kind, err)
		}
		if len(ds) == 0 {
			return nil, fmt.Errorf("%v: element without dots", kind)
		}
		s.put(k, &element{value: e.GetValue(), dots: ds})
	}
	return s, nil
}

func (d *decoder) ormap(m *crdtv1.Map, depth int) (store, error) {
	s := &mapStore{}
	for _, pe := range m.GetEntries() {
		if pe.GetKey() == nil {
			return nil, fmt.Errorf("ormap: %w", errNilAny)
		}
		k := anyKey(pe.GetKey())
		if _, dup := s.entries[k]; dup {
			return nil, errors.New("ormap: key twice")
		}
		if len(pe.GetValues()) == 0 {
			return nil, errors.New("ormap: key without values")
		}
		e := s.entry(k, pe.GetKey())
		for _, pv := range pe.GetValues() {
			live, err := d.storeDots(pv.GetDots())
			if err != nil {
				return nil, fmt.Errorf("ormap: %w", err)
			}
			if len(live) == 0 {
				live = nil
			}
			st, err := d.value(pv.GetValue(), depth+1)
			if err != nil {
				return nil, fmt.Errorf("ormap: %w", err)
			}
			if _, dup := e.vals[st.kind()]; dup {
				return nil, fmt.Errorf("ormap: two %v values under one key", st.kind())
			}
			v := &mapValue{live: live, st: st}
			if v.empty() {
				return nil, errors.New("ormap: empty value")
			}
			e.setValue(st.kind(), v)
		}
	}
	return s, nil
}
