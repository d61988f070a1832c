package release

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	provenance "github.com/in-toto/attestation/go/predicates/provenance/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Predicate types of the attestations a release attaches.
const (
	PredicateSLSAProvenance = "https://slsa.dev/provenance/v1"
	PredicateCycloneDX      = "https://cyclonedx.org/bom"
	// BuildType names how the images are built, in the provenance.
	BuildType = "https://github.com/mcp-warden/mcp-warden/supplychain/release/build@v1"
	// BuilderID names the builder in the provenance.
	BuilderID = "https://github.com/mcp-warden/mcp-warden/hack/release"
)

// SBOM is a CycloneDX 1.6 bill of materials for a binary, from the module list the Go linker embedded
// in it: the main module and every module linked in, with their versions, package URLs and go.sum
// hashes.
func SBOM(c Component, binary []byte, o Options) ([]byte, error) {
	o.defaults()
	bi, err := Modules(binary)
	if err != nil {
		return nil, fmt.Errorf("read the module list of %s: %w", c.Name, err)
	}
	purl := func(path, version string) string { return "pkg:golang/" + path + "@" + version }
	mainVersion := o.Version
	if mainVersion == "" {
		mainVersion = bi.Main.Version
	}
	bom := cdx.NewBOM()
	bom.SpecVersion = cdx.SpecVersion1_6
	bom.Metadata = &cdx.Metadata{
		Timestamp: o.Epoch.UTC().Format(time.RFC3339),
		Component: &cdx.Component{Type: cdx.ComponentTypeApplication, Name: c.Name, Version: mainVersion,
			BOMRef: purl(bi.Main.Path, mainVersion), PackageURL: purl(bi.Main.Path, mainVersion)},
		Properties: &[]cdx.Property{{Name: "go.version", Value: bi.GoVersion}, {Name: "go.package", Value: bi.Path}},
	}
	var comps []cdx.Component
	var refs []string
	for _, m := range bi.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		comp := cdx.Component{Type: cdx.ComponentTypeLibrary, Name: m.Path, Version: m.Version, BOMRef: purl(m.Path, m.Version), PackageURL: purl(m.Path, m.Version)}
		if h, ok := strings.CutPrefix(m.Sum, "h1:"); ok {
			comp.Properties = &[]cdx.Property{{Name: "go.sum", Value: "h1:" + h}}
		}
		comps = append(comps, comp)
		refs = append(refs, comp.BOMRef)
	}
	sort.Slice(comps, func(i, j int) bool { return comps[i].BOMRef < comps[j].BOMRef })
	sort.Strings(refs)
	bom.Components = &comps
	bom.Dependencies = &[]cdx.Dependency{{Ref: bom.Metadata.Component.BOMRef, Dependencies: &refs}}
	var buf bytes.Buffer
	if err := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).Encode(bom); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Provenance is an SLSA v1 provenance predicate for an image index: what was built (the Go packages for
// the platforms), from which source revision, with which toolchain and modules.
func Provenance(b *Build, o Options) ([]byte, error) {
	o.defaults()
	ext, err := structpb.NewStruct(map[string]any{
		"source":    o.Source,
		"revision":  o.Revision,
		"package":   b.Component.Package,
		"platforms": toAny(o.Platforms),
		"flags":     "CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w -buildid='",
	})
	if err != nil {
		return nil, err
	}
	var deps []*intoto.ResourceDescriptor
	switch {
	case o.Source != "" && gitCommit.MatchString(o.Revision):
		deps = append(deps, &intoto.ResourceDescriptor{Uri: "git+" + o.Source, Digest: map[string]string{"gitCommit": o.Revision}})
	case o.Source != "":
		deps = append(deps, &intoto.ResourceDescriptor{Uri: "git+" + o.Source})
	}
	for _, bin := range b.Binaries {
		bi, err := Modules(bin)
		if err != nil {
			return nil, err
		}
		deps = append(deps, &intoto.ResourceDescriptor{Name: "go", Uri: "https://go.dev/dl/" + bi.GoVersion})
		for _, m := range bi.Deps {
			if m.Replace != nil {
				m = m.Replace
			}
			d := &intoto.ResourceDescriptor{Uri: "pkg:golang/" + m.Path + "@" + m.Version}
			if m.Sum != "" {
				d.Annotations, _ = structpb.NewStruct(map[string]any{"go.sum": m.Sum})
			}
			deps = append(deps, d)
		}
		break // every platform links the same modules
	}
	version := map[string]string{}
	if bi, ok := debug.ReadBuildInfo(); ok {
		version["go"] = bi.GoVersion
	}
	p := &provenance.Provenance{
		BuildDefinition: &provenance.BuildDefinition{BuildType: BuildType, ExternalParameters: ext, ResolvedDependencies: deps},
		RunDetails: &provenance.RunDetails{
			Builder:  &provenance.Builder{Id: BuilderID, Version: version},
			Metadata: &provenance.BuildMetadata{InvocationId: b.Component.Name + "@" + o.Revision, StartedOn: timestamppb.New(o.Epoch), FinishedOn: timestamppb.New(o.Epoch)},
		},
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("provenance: %w", err)
	}
	raw, err := protojson.Marshal(p)
	if err != nil {
		return nil, err
	}
	// Re-encode through encoding/json for a stable layout.
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

var gitCommit = regexp.MustCompile(`^[0-9a-f]{40}$`)

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
