package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// WriteText prints one line per finding and a summary.
func WriteText(w io.Writer, findings []Finding, scanned int) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range findings {
		loc := f.File
		if f.Line > 0 {
			loc = fmt.Sprintf("%s:%d", f.File, f.Line)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", loc, f.Severity, f.RuleID, f.Object, f.Message)
		fmt.Fprintf(tw, "\t\t\t\tfix: %s\n", Rules[f.RuleID].Help)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[Severity]int{}
	for _, f := range findings {
		counts[f.Severity]++
	}
	_, err := fmt.Fprintf(w, "%d object(s) scanned: %d critical, %d high, %d medium, %d low\n", scanned, counts[Critical], counts[High], counts[Medium], counts[Low])
	return err
}

// WriteJSON prints {"scanned": n, "findings": [...]}.
func WriteJSON(w io.Writer, findings []Finding, scanned int) error {
	if findings == nil {
		findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		Scanned  int       `json:"scanned"`
		Findings []Finding `json:"findings"`
	}{scanned, findings})
}

// SARIF 2.1.0, the subset code-scanning tools read.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID               string            `json:"id"`
	Name             string            `json:"name"`
	ShortDescription sarifText         `json:"shortDescription"`
	Help             sarifText         `json:"help"`
	Properties       map[string]string `json:"properties"`
	DefaultConfig    struct {
		Level string `json:"level"`
	} `json:"defaultConfiguration"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifResult struct {
	RuleID    string          `json:"ruleId"`
	Level     string          `json:"level"`
	Message   sarifText       `json:"message"`
	Locations []sarifLocation `json:"locations"`
}

type sarifLocation struct {
	PhysicalLocation struct {
		ArtifactLocation struct {
			URI string `json:"uri"`
		} `json:"artifactLocation"`
		Region *struct {
			StartLine int `json:"startLine"`
		} `json:"region,omitempty"`
	} `json:"physicalLocation"`
}

func level(s Severity) string {
	switch s {
	case Critical, High:
		return "error"
	case Medium:
		return "warning"
	}
	return "note"
}

// WriteSARIF prints a SARIF 2.1.0 log with every rule and the findings.
func WriteSARIF(w io.Writer, findings []Finding) error {
	ids := make([]string, 0, len(Rules))
	for id := range Rules {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	driver := sarifDriver{Name: "mcp-warden-scan", InformationURI: "https://github.com/mcp-warden/mcp-warden"}
	for _, id := range ids {
		r := Rules[id]
		sr := sarifRule{ID: id, Name: r.Title, ShortDescription: sarifText{r.Title}, Help: sarifText{r.Help}, Properties: map[string]string{"severity": r.Severity.String()}}
		sr.DefaultConfig.Level = level(r.Severity)
		driver.Rules = append(driver.Rules, sr)
	}
	results := []sarifResult{}
	for _, f := range findings {
		loc := sarifLocation{}
		loc.PhysicalLocation.ArtifactLocation.URI = f.File
		if f.Line > 0 {
			loc.PhysicalLocation.Region = &struct {
				StartLine int `json:"startLine"`
			}{f.Line}
		}
		msg := f.Message
		if f.Object != "" {
			msg = f.Object + ": " + msg
		}
		results = append(results, sarifResult{RuleID: f.RuleID, Level: level(f.Severity), Message: sarifText{msg}, Locations: []sarifLocation{loc}})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{Schema: "https://json.schemastore.org/sarif-2.1.0.json", Version: "2.1.0", Runs: []sarifRun{{Tool: sarifTool{Driver: driver}, Results: results}}})
}
