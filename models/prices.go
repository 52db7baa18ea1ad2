package models

import "strings"

// NodePrice is what one machine with one GPU of a profile costs to buy and what it draws beside
// the GPU, for planning a cluster (herd plan). A "node" is the unit herd schedules: one agent on
// one PC or server with one GPU.
type NodePrice struct {
	// GPU is the profile key ("t4").
	GPU string `json:"gpu" yaml:"gpu"`
	// PriceUSD is the price of the whole machine, GPU included, in US dollars.
	PriceUSD float64 `json:"price_usd" yaml:"price_usd"`
	// HostPowerWatts is what the machine draws under load beside the GPU (CPU, memory, disks,
	// fans, power-supply losses).
	HostPowerWatts float64 `json:"host_power_watts" yaml:"host_power_watts"`
	// Source says where the price comes from.
	Source string `json:"source" yaml:"source"`
}

// DefaultHostPowerWatts is the host draw assumed for every node: a single-GPU PC or 1U server
// under inference load (a desktop CPU mostly idle while the GPU works, RAM, an SSD, fans and
// about 10% power-supply loss). It is an assumption, not a measurement; a catalogue file
// overrides it per GPU.
const DefaultHostPowerWatts = 100

// seedSource names the figures the project's seed gave: "10 × T4 about $50k, 10 × A40 about
// $70k, 10 PCs with 3090/A100 $47k–$122k".
const seedSource = "herd's seed cluster prices (10 × T4 ≈ $50k, 10 × A40 ≈ $70k, 10 PCs with RTX 3090 / A100 $47k–$122k), divided by 10"

// hostUSD is the machine around the GPU, derived from the seed: a T4 node at $5,000 less the T4's
// $1,880 MSRP (chipversus.com, Tesla T4) leaves about $3,100. It prices the nodes the seed did
// not (L4, H100) as card + host.
const hostUSD = 3100

var nodePrices = []NodePrice{
	{GPU: "t4", PriceUSD: 5000, HostPowerWatts: DefaultHostPowerWatts, Source: seedSource + ": $5,000 per T4 node"},
	{GPU: "a40", PriceUSD: 7000, HostPowerWatts: DefaultHostPowerWatts, Source: seedSource + ": $7,000 per A40 node"},
	{GPU: "3090", PriceUSD: 4700, HostPowerWatts: DefaultHostPowerWatts, Source: seedSource + ": $4,700 per RTX 3090 PC (the low end of the range)"},
	{GPU: "a100", PriceUSD: 12200, HostPowerWatts: DefaultHostPowerWatts, Source: seedSource + ": $12,200 per A100 PC (the high end of the range; " +
		"used A100 80GB boards sell for $8–15k, mercatus-ai.com A100 vs H100 vs H200)"},
	{GPU: "l4", PriceUSD: 2345 + hostUSD, HostPowerWatts: DefaultHostPowerWatts, Source: "NVIDIA L4 MSRP $2,345 (chipversus.com, L4; $2,500 retail at runlocalai.co) " +
		"+ a $3,100 host (a seed T4 node less the T4's $1,880 MSRP)"},
	{GPU: "h100", PriceUSD: 27500 + hostUSD, HostPowerWatts: DefaultHostPowerWatts, Source: "NVIDIA H100 80GB at $25,000–30,000 new (awesomeagents.ai, NVIDIA H100 SXM), " +
		"midpoint $27,500 + a $3,100 host (a seed T4 node less the T4's MSRP); an SXM board needs a server, so this is a lower bound"},
}

// NodePrices returns the built-in node prices, a fresh copy, in the order of GPUProfiles.
func NodePrices() []NodePrice {
	out := make([]NodePrice, 0, len(nodePrices))
	for _, p := range gpuProfiles {
		for _, np := range nodePrices {
			if np.GPU == p.Key {
				out = append(out, np)
			}
		}
	}
	return out
}

// LookupNodePrice finds the built-in price of a node with GPU key (or alias).
func LookupNodePrice(key string) (NodePrice, bool) {
	p, ok := LookupGPU(key)
	if !ok {
		return NodePrice{}, false
	}
	for _, np := range nodePrices {
		if strings.EqualFold(np.GPU, p.Key) {
			return np, true
		}
	}
	return NodePrice{}, false
}
