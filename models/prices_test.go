package models

import (
	"strings"
	"testing"
)

func TestNodePrices(t *testing.T) {
	prices := NodePrices()
	if len(prices) != len(GPUProfiles()) {
		t.Fatalf("%d prices for %d profiles: every profile needs one", len(prices), len(GPUProfiles()))
	}
	seed := map[string]float64{"t4": 5000, "a40": 7000, "3090": 4700, "a100": 12200}
	for i, p := range prices {
		if p.GPU != GPUProfiles()[i].Key {
			t.Errorf("price %d is for %s, want the profiles' order (%s)", i, p.GPU, GPUProfiles()[i].Key)
		}
		if p.PriceUSD <= 0 || p.HostPowerWatts <= 0 || !strings.Contains(p.Source, "$") {
			t.Errorf("%s: %+v lacks a price, a host draw or a source", p.GPU, p)
		}
		if want, ok := seed[p.GPU]; ok && p.PriceUSD != want {
			t.Errorf("%s: $%v, want the seed's $%v", p.GPU, p.PriceUSD, want)
		}
	}
	if p, ok := LookupNodePrice("RTX3090"); !ok || p.GPU != "3090" {
		t.Errorf("lookup by alias: %+v %v", p, ok)
	}
	if _, ok := LookupNodePrice("v100"); ok {
		t.Error("an unknown GPU has a price")
	}
	prices[0].PriceUSD = 1
	if NodePrices()[0].PriceUSD == 1 {
		t.Error("NodePrices hands out the table itself")
	}
}
