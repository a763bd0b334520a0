package dashboards

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// Query is one PromQL expression a shipped dashboard runs: a panel target, an
// annotation, or the series behind a template variable.
type Query struct {
	// Dashboard is the file stem under grafana/ ("node-memory", ...).
	Dashboard string
	// Panel is the panel title, "annotation: <name>" or "variable: <name>".
	Panel string
	// RefID is the query's refId within its panel ("" for annotations and
	// variables).
	RefID string
	// Expr is the expression as Grafana sends it, with template variables
	// ($node, $__rate_interval, ...) unresolved.
	Expr string
	// MayBeEmpty says why the query may return no series on a healthy vigil
	// (the event it shows did not happen); "" means it must return data.
	MayBeEmpty string
}

// File is one generated dashboard.
type File struct {
	// Name is the file name under grafana/ (e.g. "node-memory.json").
	Name string
	JSON []byte
}

// Generate builds every dashboard and returns its JSON, indented and ending
// with a newline, in a stable order.
func Generate() ([]File, error) {
	var out []File
	for _, b := range boards() {
		d, err := b.build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", b.file, err)
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("dashboard %s: encode: %w", b.file, err)
		}
		out = append(out, File{Name: b.file + ".json", JSON: buf.Bytes()})
	}
	return out, nil
}

// Queries lists every query of every shipped dashboard, in dashboard order.
func Queries() []Query {
	var out []Query
	for _, b := range boards() {
		for _, v := range b.vars {
			out = append(out, Query{Dashboard: b.file, Panel: "variable: " + v.name, Expr: v.promQL(), MayBeEmpty: v.emptyWhen})
		}
		for _, a := range b.annotations {
			out = append(out, Query{Dashboard: b.file, Panel: "annotation: " + a.name, Expr: a.expr, MayBeEmpty: a.emptyWhen})
		}
		for _, r := range b.rows {
			for _, p := range r.panels {
				for i, t := range p.targets {
					out = append(out, Query{Dashboard: b.file, Panel: p.title, RefID: refID(i), Expr: t.expr, MayBeEmpty: t.emptyWhen})
				}
			}
		}
	}
	return out
}

// The dashboards are declared as data below and turned into Grafana models by
// build, so that Queries and the JSON cannot disagree.

type board struct {
	file, uid, title, description string
	tags                          []string
	vars                          []variable
	annotations                   []annotation
	rows                          []row
}

// variable is a query variable whose values are label_values(metric, label).
type variable struct {
	name, label string
	// metric is the series selector the values come from.
	metric    string
	valueOf   string
	emptyWhen string
}

// promQL is the PromQL equivalent of the variable's label_values(): one
// series per non-empty value of the label.
func (v variable) promQL() string {
	sel := v.metric
	cond := v.valueOf + `!=""`
	if strings.HasSuffix(sel, "}") {
		sel = sel[:len(sel)-1] + "," + cond + "}"
	} else {
		sel += "{" + cond + "}"
	}
	return "group by (" + v.valueOf + ") (" + sel + ")"
}

type annotation struct {
	name, expr, titleFormat, textFormat, color, emptyWhen string
}

type row struct {
	title  string
	panels []panel
}

type panelKind int

const (
	timeSeries panelKind = iota
	singleStat
)

type panel struct {
	title, description, unit string
	kind                     panelKind
	width, height            uint32
	min                      *float64
	stacked                  bool
	targets                  []target
}

type target struct {
	expr, legend, emptyWhen string
}

func refID(i int) string { return string(rune('A' + i)) }

var datasourceRef = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

func (b board) build() (dashboard.Dashboard, error) {
	db := dashboard.NewDashboardBuilder(b.title).
		Uid(b.uid).
		Description(b.description).
		Tags(b.tags).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus"))
	for _, v := range b.vars {
		def := fmt.Sprintf("label_values(%s, %s)", v.metric, v.valueOf)
		db = db.WithVariable(dashboard.NewQueryVariableBuilder(v.name).
			Label(v.label).
			Datasource(datasourceRef).
			Query(dashboard.StringOrMap{String: cog.ToPtr(def)}).
			Definition(def).
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Sort(dashboard.VariableSortAlphabeticalAsc).
			Multi(true).
			IncludeAll(true).
			// ".*" also matches series without the label (no Kubernetes).
			AllValue(".*").
			Current(dashboard.VariableOption{
				Text:  dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
				Value: dashboard.StringOrArrayOfString{String: cog.ToPtr("$__all")},
			}))
	}
	// Grafana's built-in annotations (manual ones) stay available.
	db = db.Annotation(dashboard.NewAnnotationQueryBuilder().
		Name("Annotations & Alerts").
		Datasource(common.DataSourceRef{Type: cog.ToPtr("grafana"), Uid: cog.ToPtr("-- Grafana --")}).
		Enable(true).
		Hide(true).
		IconColor("rgba(0, 211, 255, 1)").
		Type("dashboard").
		BuiltIn(1))
	for _, a := range b.annotations {
		db = db.Annotation(dashboard.NewAnnotationQueryBuilder().
			Name(a.name).
			Datasource(datasourceRef).
			Enable(true).
			IconColor(a.color).
			Expr(a.expr).
			Step("10s").
			TitleFormat(a.titleFormat).
			TextFormat(a.textFormat).
			UseValueForTime(false))
	}
	id := uint32(0)
	for _, r := range b.rows {
		id++
		db = db.WithRow(dashboard.NewRowBuilder(r.title).Id(id))
		for _, p := range r.panels {
			id++
			db = db.WithPanel(p.builder(id))
		}
	}
	d, err := db.Build()
	if err != nil {
		return dashboard.Dashboard{}, err
	}
	return d, nil
}

func (p panel) builder(id uint32) cog.Builder[dashboard.Panel] {
	w, h := p.width, p.height
	if w == 0 {
		w = 12
	}
	if h == 0 {
		h = 8
	}
	targets := make([]cog.Builder[variants.Dataquery], 0, len(p.targets))
	for i, t := range p.targets {
		q := prometheus.NewDataqueryBuilder().
			RefId(refID(i)).
			Datasource(datasourceRef).
			Expr(t.expr).
			LegendFormat(t.legend)
		if p.kind == singleStat {
			q = q.Instant()
		} else {
			q = q.Range()
		}
		targets = append(targets, q)
	}
	switch p.kind {
	case singleStat:
		s := stat.NewPanelBuilder().
			Id(id).
			Title(p.title).
			Description(p.description).
			Datasource(datasourceRef).
			Unit(p.unit).
			Span(w).
			Height(h).
			Targets(targets).
			GraphMode(common.BigValueGraphModeArea).
			ColorMode(common.BigValueColorModeValue).
			ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
		return s
	default:
		ts := timeseries.NewPanelBuilder().
			Id(id).
			Title(p.title).
			Description(p.description).
			Datasource(datasourceRef).
			Unit(p.unit).
			Span(w).
			Height(h).
			Targets(targets).
			LineWidth(1).
			FillOpacity(10).
			ShowPoints(common.VisibilityModeNever).
			Legend(common.NewVizLegendOptionsBuilder().
				DisplayMode(common.LegendDisplayModeTable).
				Placement(common.LegendPlacementBottom).
				ShowLegend(true).
				Calcs([]string{"lastNotNull", "max"})).
			Tooltip(common.NewVizTooltipOptionsBuilder().
				Mode(common.TooltipDisplayModeMulti).
				Sort(common.SortOrderDescending))
		if p.min != nil {
			ts = ts.Min(*p.min)
		}
		if p.stacked {
			ts = ts.Stacking(common.NewStackingConfigBuilder().Mode(common.StackingModeNormal))
		}
		return ts
	}
}
