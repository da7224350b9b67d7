package proxy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/cloudchat/cloudchat/gen/cloudstate/protocol"
)

// crdtEntityType is the only entity type this proxy serves.
const crdtEntityType = "cloudstate.crdt.Crdt"

// entityKeyOption is the field number of the cloudstate.entity_key option in
// google.protobuf.FieldOptions (protocol v0.5).
const entityKeyOption protowire.Number = 50002

// typeURLPrefix prefixes the type URL of every message payload.
const typeURLPrefix = "type.googleapis.com/"

// catalog is what discovery learnt: the user function's services, their
// methods and the descriptors behind them. It is immutable once built.
type catalog struct {
	files    *protoregistry.Files
	types    *dynamicpb.Types
	services []*service
	byName   map[string]*service
	info     *protocol.ServiceInfo
	// extensions lists the extensions of each message, for reflection.
	extensions map[protoreflect.FullName][]protoreflect.ExtensionType
}

// service is one entity service of the user function.
type service struct {
	name          string
	persistenceID string
	desc          protoreflect.ServiceDescriptor
	methods       map[string]*method
}

// method is one RPC of an entity service.
type method struct {
	svc       *service
	name      string
	path      string
	desc      protoreflect.MethodDescriptor
	streamed  bool
	key       []protoreflect.FieldDescriptor
	inputURL  string
	outputURL string
}

// specError lists everything wrong with an entity spec.
type specError struct {
	problems []string
}

func (e *specError) Error() string {
	return "invalid entity spec: " + strings.Join(e.problems, "; ")
}

// newCatalog validates an entity spec and builds the catalog from it. The
// error lists every problem found, in one line.
func newCatalog(spec *protocol.EntitySpec) (*catalog, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		return nil, &specError{[]string{"proto is not a FileDescriptorSet: " + err.Error()}}
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, &specError{[]string{
			"descriptor set is not self-contained or not valid: " + err.Error()}}
	}
	c := &catalog{
		files:  files,
		types:  dynamicpb.NewTypes(files),
		byName: make(map[string]*service),
		info:   spec.GetServiceInfo(),

		extensions: make(map[protoreflect.FullName][]protoreflect.ExtensionType),
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		c.addExtensions(fd.Extensions(), fd.Messages())
		return true
	})
	var problems []string
	if len(spec.GetEntities()) == 0 {
		problems = append(problems, "no entities")
	}
	for _, ent := range spec.GetEntities() {
		svc, err := c.addService(ent)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		c.services = append(c.services, svc)
		c.byName[svc.name] = svc
	}
	if len(problems) > 0 {
		return nil, &specError{problems}
	}
	return c, nil
}

// addExtensions indexes extensions by the message they extend, recursing
// into nested messages.
func (c *catalog) addExtensions(xds protoreflect.ExtensionDescriptors,
	mds protoreflect.MessageDescriptors) {
	for i := range xds.Len() {
		xd := xds.Get(i)
		name := xd.ContainingMessage().FullName()
		c.extensions[name] = append(c.extensions[name], dynamicpb.NewExtensionType(xd))
	}
	for i := range mds.Len() {
		md := mds.Get(i)
		c.addExtensions(md.Extensions(), md.Messages())
	}
}

// addService validates one entity of the spec and returns its service.
func (c *catalog) addService(ent *protocol.Entity) (*service, error) {
	name := ent.GetServiceName()
	if ent.GetEntityType() != crdtEntityType {
		return nil, fmt.Errorf("service %q has entity type %q; this proxy serves only %s",
			name, ent.GetEntityType(), crdtEntityType)
	}
	if _, dup := c.byName[name]; dup {
		return nil, fmt.Errorf("service %q is listed twice", name)
	}
	d, err := c.files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("service %q is not in the descriptor set", name)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%q is not a service in the descriptor set", name)
	}
	svc := &service{
		name:          name,
		persistenceID: ent.GetPersistenceId(),
		desc:          sd,
		methods:       make(map[string]*method),
	}
	var problems []string
	mds := sd.Methods()
	for i := range mds.Len() {
		md := mds.Get(i)
		m, err := newMethod(svc, md)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		svc.methods[m.name] = m
	}
	if len(problems) > 0 {
		return nil, errors.New(strings.Join(problems, "; "))
	}
	return svc, nil
}

// newMethod validates one method of a CRDT service.
func newMethod(svc *service, md protoreflect.MethodDescriptor) (*method, error) {
	full := string(md.FullName())
	if md.IsStreamingClient() {
		return nil, fmt.Errorf("method %s is client streaming, which CRDT entities do not support",
			full)
	}
	key, err := entityKey(md.Input())
	if err != nil {
		return nil, fmt.Errorf("method %s: %w", full, err)
	}
	return &method{
		svc:       svc,
		name:      string(md.Name()),
		path:      "/" + svc.name + "/" + string(md.Name()),
		desc:      md,
		streamed:  md.IsStreamingServer(),
		key:       key,
		inputURL:  typeURLPrefix + string(md.Input().FullName()),
		outputURL: typeURLPrefix + string(md.Output().FullName()),
	}, nil
}

// entityKey returns the fields of msg marked (cloudstate.entity_key) = true,
// in declaration order.
func entityKey(msg protoreflect.MessageDescriptor) ([]protoreflect.FieldDescriptor, error) {
	var key []protoreflect.FieldDescriptor
	fields := msg.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !isEntityKey(fd) {
			continue
		}
		if fd.IsList() || fd.IsMap() {
			return nil, fmt.Errorf("entity key field %s is repeated", fd.FullName())
		}
		switch fd.Kind() {
		case protoreflect.MessageKind, protoreflect.GroupKind, protoreflect.BytesKind:
			return nil, fmt.Errorf("entity key field %s has unsupported type %s",
				fd.FullName(), fd.Kind())
		}
		key = append(key, fd)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("input message %s has no field marked (cloudstate.entity_key) = true",
			msg.FullName())
	}
	return key, nil
}

// isEntityKey reports whether a field carries the entity key option, as a
// resolved extension or as an unknown field 50002 holding a true varint.
func isEntityKey(fd protoreflect.FieldDescriptor) bool {
	opts, ok := fd.Options().(*descriptorpb.FieldOptions)
	if !ok || opts == nil {
		return false
	}
	if proto.HasExtension(opts, protocol.E_EntityKey) {
		v, _ := proto.GetExtension(opts, protocol.E_EntityKey).(bool)
		return v
	}
	found := false
	b := opts.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == entityKeyOption && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return false
			}
			found = v != 0
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return found
}

// entityID returns the entity id of a request: its key fields in declaration
// order, joined with "-". It rejects a request whose string key field is
// empty.
func (m *method) entityID(msg protoreflect.Message) (string, error) {
	if len(m.key) == 1 {
		return keyPart(m.key[0], msg)
	}
	parts := make([]string, 0, len(m.key))
	for _, fd := range m.key {
		p, err := keyPart(fd, msg)
		if err != nil {
			return "", err
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "-"), nil
}

// keyPart formats one entity key field of msg.
func keyPart(fd protoreflect.FieldDescriptor, msg protoreflect.Message) (string, error) {
	v := msg.Get(fd)
	switch fd.Kind() {
	case protoreflect.StringKind:
		s := v.String()
		if s == "" {
			return "", fmt.Errorf("entity key field %s is empty", fd.Name())
		}
		return s, nil
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool()), nil
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(v.Int(), 10), nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(v.Uint(), 10), nil
	case protoreflect.FloatKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 32), nil
	case protoreflect.DoubleKind:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64), nil
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name()), nil
		}
		return strconv.FormatInt(int64(v.Enum()), 10), nil
	}
	return "", fmt.Errorf("entity key field %s has unsupported type %s", fd.Name(), fd.Kind())
}

// serviceNames returns the full names of the user services, sorted.
func (c *catalog) serviceNames() []string {
	names := make([]string, 0, len(c.services))
	for _, s := range c.services {
		names = append(names, s.name)
	}
	slices.Sort(names)
	return names
}

// lookup returns a method by service and method name.
func (c *catalog) lookup(serviceName, methodName string) (*method, bool) {
	svc, ok := c.byName[serviceName]
	if !ok {
		return nil, false
	}
	m, ok := svc.methods[methodName]
	return m, ok
}
