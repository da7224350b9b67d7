package devstack

import (
	"slices"
	"testing"
)

func TestPlanSingleReplica(t *testing.T) {
	t.Parallel()
	procs, err := Plan(Config{Replicas: 1, GatewayPort: 3000})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range procs {
		names = append(names, p.Name)
	}
	want := []string{"friends", "friends-proxy", "presence", "presence-proxy", "gateway"}
	if !slices.Equal(names, want) {
		t.Fatalf("got processes %v, want %v", names, want)
	}
	gw := procs[len(procs)-1]
	for _, env := range []string{"PRESENCE=127.0.0.1:9002", "FRIENDS=127.0.0.1:9001", "PORT=3000"} {
		if !slices.Contains(gw.Env, env) {
			t.Errorf("gateway env %v lacks %s", gw.Env, env)
		}
	}
	for _, p := range procs {
		for _, e := range p.Env {
			if len(e) > 13 && e[:13] == "CLUSTER_PORT=" {
				t.Errorf("%s has cluster settings with one replica: %s", p.Name, e)
			}
		}
	}
}

func TestPlanReplicasUseDistinctPorts(t *testing.T) {
	t.Parallel()
	procs, err := Plan(Config{Replicas: 3, GatewayPort: 3000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, p := range procs {
		for _, e := range p.Env {
			key := ""
			for _, prefix := range []string{"PORT=", "HTTP_PORT=", "METRICS_PORT=", "CLUSTER_PORT="} {
				if len(e) > len(prefix) && e[:len(prefix)] == prefix {
					key = e[len(prefix):]
				}
			}
			if key == "" {
				continue
			}
			if other, ok := seen[key]; ok {
				t.Errorf("port %s used by %s and %s", key, other, p.Name)
			}
			seen[key] = p.Name
		}
	}
	if got := len(procs); got != 13 {
		t.Errorf("got %d processes, want 13", got)
	}
}

func TestPlanRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{Replicas: 0, GatewayPort: 3000},
		{Replicas: 10, GatewayPort: 3000},
		{Replicas: 1, GatewayPort: 0},
		{Replicas: 1, GatewayPort: 70000},
	} {
		if _, err := Plan(cfg); err == nil {
			t.Errorf("Plan(%+v) succeeded, want an error", cfg)
		}
	}
}
