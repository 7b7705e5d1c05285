/**
 * Hand-written SVG plots for the HTML report: a heat map and a line chart. Plain SVG 1.1 with
 * inline attributes (no script, no external font or stylesheet), so the page opens offline and
 * each plot can be saved on its own. Every <svg> carries `data-plot="<id>"` for tests and scripts.
 */

/**
 * Escapes text for XML content and attribute values.
 *
 * @example
 * esc('a < b & "c"'); // 'a &lt; b &amp; &quot;c&quot;'
 */
export function esc(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const num = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(2));

/**
 * A colour-blind-safe sequential scale (light yellow → green → dark blue) at t ∈ [0, 1].
 *
 * @example
 * sequentialColor(0); // 'rgb(255,255,217)'
 */
export function sequentialColor(t: number): string {
  const stops: [number, number, number][] = [
    [255, 255, 217],
    [199, 233, 180],
    [65, 182, 196],
    [34, 94, 168],
    [8, 29, 88],
  ];
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Colours of line series, in order (Okabe–Ito). */
export const SERIES_COLORS = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

/**
 * Tick values covering [lo, hi] at a 1/2/5 × 10^k step.
 *
 * @example
 * niceTicks(0, 1); // [0, 0.2, 0.4, 0.6, 0.8, 1]
 */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toFixed(12)));
  return out;
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

export interface HeatmapOptions {
  id: string;
  title: string;
  rowLabels: string[];
  colLabels: string[];
  /** Values in [0, 1] (null: not measured); cells show them ×100. */
  values: (number | null)[][];
  /** Column index before which a separating line is drawn (e.g. where held-out tasks start). */
  splitAt?: number;
  /** Extra attributes for the <svg> element, e.g. `data-run="0"`. */
  attrs?: string;
}

/**
 * A stage × task heat map with the value (×100) in every cell and a colour bar.
 *
 * @example
 * heatmapSvg({ id: 'heatmap', title: 'ROUGE-L', rowLabels: ['base', 'stage 1'], colLabels: ['t1'], values: [[0.1], [0.8]] });
 */
export function heatmapSvg(o: HeatmapOptions): string {
  const cell = { w: 58, h: 26 };
  const labelW = Math.min(220, 12 + 7 * Math.max(4, ...o.rowLabels.map((l) => shorten(l, 30).length)));
  const headH = Math.min(150, 16 + 5 * Math.max(4, ...o.colLabels.map((l) => shorten(l, 28).length)));
  const top = 28 + headH;
  const cols = o.colLabels.length, rows = o.rowLabels.length;
  const width = labelW + cols * cell.w + 90;
  const height = top + rows * cell.h + 20;
  const parts: string[] = [];
  parts.push(`<text x="0" y="16" font-size="14" font-weight="bold">${esc(o.title)}</text>`);
  o.colLabels.forEach((label, j) => {
    const x = labelW + j * cell.w + cell.w / 2;
    parts.push(`<text x="${num(x)}" y="${top - 6}" font-size="11" transform="rotate(-45 ${num(x)} ${top - 6})"><title>${esc(label)}</title>${esc(shorten(label, 28))}</text>`);
  });
  o.rowLabels.forEach((label, i) => {
    const y = top + i * cell.h;
    parts.push(`<text x="${labelW - 6}" y="${num(y + cell.h / 2 + 4)}" font-size="11" text-anchor="end"><title>${esc(label)}</title>${esc(shorten(label, 30))}</text>`);
    o.colLabels.forEach((_, j) => {
      const v = o.values[i]?.[j] ?? null;
      const x = labelW + j * cell.w;
      const fill = v === null ? '#e5e5e5' : sequentialColor(v);
      const ink = v !== null && v > 0.55 ? '#ffffff' : '#222222';
      parts.push(
        `<rect x="${x}" y="${y}" width="${cell.w - 1}" height="${cell.h - 1}" fill="${fill}"><title>${esc(label)} × ${esc(o.colLabels[j])}: ${v === null ? 'not evaluated' : (100 * v).toFixed(2)}</title></rect>`,
        `<text x="${num(x + cell.w / 2)}" y="${num(y + cell.h / 2 + 4)}" font-size="11" text-anchor="middle" fill="${ink}">${v === null ? '–' : (100 * v).toFixed(1)}</text>`,
      );
    });
  });
  if (o.splitAt !== undefined && o.splitAt > 0 && o.splitAt < cols) {
    const x = labelW + o.splitAt * cell.w - 0.5;
    parts.push(`<line x1="${x}" y1="${top - 4}" x2="${x}" y2="${top + rows * cell.h}" stroke="#000" stroke-width="2"/>`);
  }
  // Colour bar, 0 at the bottom.
  const barX = labelW + cols * cell.w + 24, barH = Math.max(60, rows * cell.h);
  for (let k = 0; k < 20; k++) {
    parts.push(`<rect x="${barX}" y="${num(top + barH - ((k + 1) * barH) / 20)}" width="14" height="${num(barH / 20 + 0.5)}" fill="${sequentialColor((k + 0.5) / 20)}"/>`);
  }
  parts.push(`<text x="${barX + 18}" y="${top + barH}" font-size="10">0</text>`, `<text x="${barX + 18}" y="${top + 8}" font-size="10">100</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" data-plot="${esc(o.id)}" ${o.attrs ?? ''} width="${width}" height="${Math.max(height, top + barH + 10)}" viewBox="0 0 ${width} ${Math.max(height, top + barH + 10)}" font-family="sans-serif" role="img" aria-label="${esc(o.title)}">${parts.join('')}</svg>`;
}

export interface Series {
  name: string;
  /** [x, y]; y null leaves a gap. */
  points: [number, number | null][];
  color?: string;
  dashed?: boolean;
}

export interface LineChartOptions {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Vertical guide lines (stage boundaries), each with a short label. */
  marks?: { x: number; label: string }[];
  /** Force the y range (default: the data's, padded). */
  yRange?: [number, number];
  /** Text shown instead of axes when no series has a point. */
  empty?: string;
  width?: number;
  height?: number;
  attrs?: string;
}

/**
 * A line chart with axes, ticks, a legend, optional vertical marks; markers on every point when
 * a series has few of them.
 *
 * @example
 * lineChartSvg({ id: 'scores', title: 'Per stage', xLabel: 'stage', yLabel: '×100', series: [{ name: 'AP', points: [[1, 80], [2, 70]] }] });
 */
export function lineChartSvg(o: LineChartOptions): string {
  const W = o.width ?? 680, H = o.height ?? 300;
  const m = { left: 64, right: 150, top: 30, bottom: 44 };
  const pw = W - m.left - m.right, ph = H - m.top - m.bottom;
  const open = `<svg xmlns="http://www.w3.org/2000/svg" data-plot="${esc(o.id)}" ${o.attrs ?? ''} width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" role="img" aria-label="${esc(o.title)}">`;
  const title = `<text x="0" y="16" font-size="14" font-weight="bold">${esc(o.title)}</text>`;
  const pts = o.series.flatMap((s) => s.points.filter((p): p is [number, number] => p[1] !== null && Number.isFinite(p[1])));
  if (pts.length === 0) {
    return `${open}${title}<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="#fafafa" stroke="#ccc"/><text x="${m.left + pw / 2}" y="${m.top + ph / 2}" font-size="13" text-anchor="middle" fill="#666">${esc(o.empty ?? 'no data')}</text></svg>`;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  for (const mk of o.marks ?? []) [x0, x1] = [Math.min(x0, mk.x), Math.max(x1, mk.x)];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  let [y0, y1] = o.yRange ?? [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (!o.yRange) {
    // Pad, then widen to whole tick steps so the axis starts and ends on a labelled tick.
    const pad = (y1 - y0) * 0.05 || Math.abs(y1) * 0.1 || 1;
    const ticks = niceTicks(y0 - pad, y1 + pad);
    const step = ticks.length > 1 ? ticks[1] - ticks[0] : 1;
    [y0, y1] = [Math.floor((y0 - pad) / step) * step, Math.ceil((y1 + pad) / step) * step];
  }
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [title, `<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="#fff" stroke="#999"/>`];
  for (const v of niceTicks(y0, y1)) {
    parts.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${num(sy(v))}" y2="${num(sy(v))}" stroke="#eee"/>`, `<text x="${m.left - 6}" y="${num(sy(v) + 4)}" font-size="10" text-anchor="end">${v}</text>`);
  }
  const xt = x1 - x0 <= 12 && Number.isInteger(x0) ? Array.from({ length: x1 - x0 + 1 }, (_, i) => x0 + i) : niceTicks(x0, x1, 6);
  for (const v of xt) parts.push(`<text x="${num(sx(v))}" y="${m.top + ph + 14}" font-size="10" text-anchor="middle">${v}</text>`);
  for (const mk of o.marks ?? []) {
    parts.push(
      `<line x1="${num(sx(mk.x))}" x2="${num(sx(mk.x))}" y1="${m.top}" y2="${m.top + ph}" stroke="#888" stroke-dasharray="3,3"/>`,
      `<text x="${num(sx(mk.x) + 3)}" y="${m.top + 10}" font-size="9" fill="#555">${esc(mk.label)}</text>`,
    );
  }
  parts.push(
    `<text x="${m.left + pw / 2}" y="${H - 8}" font-size="11" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text x="14" y="${m.top + ph / 2}" font-size="11" text-anchor="middle" transform="rotate(-90 14 ${m.top + ph / 2})">${esc(o.yLabel)}</text>`,
  );
  o.series.forEach((s, i) => {
    const color = s.color ?? SERIES_COLORS[i % SERIES_COLORS.length];
    // Consecutive non-null points form one polyline; a null breaks it.
    let run: string[] = [];
    const flush = () => {
      if (run.length > 1) parts.push(`<polyline fill="none" stroke="${color}" stroke-width="1.8"${s.dashed ? ' stroke-dasharray="6,3"' : ''} points="${run.join(' ')}"/>`);
      run = [];
    };
    for (const [x, y] of s.points) {
      if (y === null || !Number.isFinite(y)) flush();
      else run.push(`${num(sx(x))},${num(sy(y))}`);
    }
    flush();
    if (s.points.length <= 40) {
      for (const [x, y] of s.points)
        if (y !== null && Number.isFinite(y)) parts.push(`<circle cx="${num(sx(x))}" cy="${num(sy(y))}" r="3" fill="${color}"><title>${esc(s.name)} at ${x}: ${y.toFixed(3)}</title></circle>`);
    }
    const ly = m.top + 8 + i * 16;
    parts.push(
      `<line x1="${m.left + pw + 12}" x2="${m.left + pw + 32}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6,3"' : ''}/>`,
      `<text x="${m.left + pw + 36}" y="${ly + 4}" font-size="11">${esc(shorten(s.name, 18))}</text>`,
    );
  });
  return `${open}${parts.join('')}</svg>`;
}
