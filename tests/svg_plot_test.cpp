// svg_plot_test.cpp — the SVG line-plot writer (include/moekd/io/svg_plot.hpp): the output is
// well-formed (balanced tags, escaped text, no "nan" anywhere), NaN/inf points break a line,
// empty series and empty plots still give a valid document, axis ranges follow the data or the
// fixed ends (values outside are clamped into the frame), markers land at their x, bad input is
// an Error naming the series.
#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <moekd/io/svg_plot.hpp>

using namespace moekd;

namespace {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

io::PlotSeries ser(std::string name, std::vector<double> x, std::vector<double> y) {
    io::PlotSeries s;
    s.name = std::move(name), s.x = std::move(x), s.y = std::move(y);
    return s;
}
io::PlotMarker mark(double x, std::string label) {
    io::PlotMarker m;
    m.x = x, m.label = std::move(label);
    return m;
}

/// A tiny tag checker: every <tag ...> is closed by </tag> in order or self-closed; attribute
/// values contain no raw '<' or '&' that is not an entity. Returns "" or what is wrong.
std::string xml_problem(const std::string& s) {
    std::vector<std::string> stack;
    size_t i = 0;
    if (s.rfind("<?xml", 0) == 0) i = s.find("?>") + 2;
    while ((i = s.find('<', i)) != std::string::npos) {
        const size_t j = s.find('>', i);
        if (j == std::string::npos) return "unterminated tag at " + std::to_string(i);
        std::string tag = s.substr(i + 1, j - i - 1);
        if (tag.find('<') != std::string::npos) return "'<' inside a tag at " + std::to_string(i);
        if (tag.empty()) return "empty tag";
        if (tag[0] == '/') {
            const std::string name = tag.substr(1);
            if (stack.empty() || stack.back() != name) return "unbalanced </" + name + ">";
            stack.pop_back();
        } else if (tag.back() != '/') {
            stack.push_back(tag.substr(0, tag.find_first_of(" \n\t")));
        }
        i = j + 1;
    }
    if (!stack.empty()) return "unclosed <" + stack.back() + ">";
    // every '&' starts an entity
    for (size_t k = s.find('&'); k != std::string::npos; k = s.find('&', k + 1)) {
        const std::string rest = s.substr(k, 6);
        if (rest.rfind("&lt;", 0) && rest.rfind("&gt;", 0) && rest.rfind("&amp;", 0) && rest.rfind("&quot;", 0) &&
            rest.rfind("&apos;", 0))
            return "raw '&' at " + std::to_string(k);
    }
    return "";
}

int count(const std::string& s, const std::string& what) {
    int n = 0;
    for (size_t k = s.find(what); k != std::string::npos; k = s.find(what, k + 1)) ++n;
    return n;
}

/// All numbers in the polylines' points="..." and the circles' cx/cy, as (x, y) pairs.
std::vector<std::pair<double, double>> drawn_points(const std::string& s) {
    std::vector<std::pair<double, double>> out;
    std::smatch m;
    std::string rest = s;
    const std::regex pts("points=\"([^\"]*)\"");
    while (std::regex_search(rest, m, pts)) {
        std::istringstream is(m[1].str());
        for (std::string xy; is >> xy;) {
            const auto c = xy.find(',');
            out.emplace_back(std::stod(xy.substr(0, c)), std::stod(xy.substr(c + 1)));
        }
        rest = m.suffix();
    }
    return out;
}

io::LinePlot two_series() {
    io::LinePlot p;
    p.title = "CE <MoE> & dense";
    p.x_label = "update";
    p.y_label = "cross-entropy";
    p.series.push_back(ser("single \"a\"", {0, 10, 20, 30}, {6.0, 5.0, 4.5, 4.0}));
    p.series.push_back(ser("tsjt", {0, 10, 20, 30}, {6.5, 5.5, 4.0, 3.5}));
    p.markers.push_back(mark(20, "stage 2 <switch>"));
    return p;
}

}  // namespace

TEST_CASE("svg plot: well-formed, escaped, one polyline per series, legend and marker", "[svg]") {
    const io::LinePlot p = two_series();
    const std::string s = io::svg_line_plot(p);
    CHECK(xml_problem(s) == "");
    CHECK(s.find("<svg") != std::string::npos);
    CHECK(s.rfind("</svg>") == s.size() - 7);
    CHECK(s.find("CE &lt;MoE&gt; &amp; dense") != std::string::npos);
    CHECK(s.find("single &quot;a&quot;") != std::string::npos);
    CHECK(s.find("stage 2 &lt;switch&gt;") != std::string::npos);
    CHECK(count(s, "<polyline") == 2);
    CHECK(count(s, "class=\"marker\"") == 1);
    CHECK(drawn_points(s).size() == 8);
    // a broken checker would accept anything: show it rejects bad documents
    CHECK(xml_problem("<svg><text>a</svg>") != "");
    CHECK(xml_problem("<svg><text>a & b</text></svg>") != "");
}

TEST_CASE("svg plot: axis ranges follow the data, fixed ends, clamping, marker position", "[svg]") {
    io::LinePlot p = two_series();
    p.nice = false;  // the exact data range (nice ends: below)
    const io::AxisRange xr = io::plot_x_range(p), yr = io::plot_y_range(p);
    CHECK(xr.lo == 0.0);
    CHECK(xr.hi == 30.0);
    CHECK(yr.lo == 3.5);
    CHECK(yr.hi == 6.5);
    // pixel coordinates: min and max values sit on the frame (left 70, right width-170, top 34,
    // bottom height-50), every point inside it
    auto inside = [&](const std::string& s) {
        for (auto [x, y] : drawn_points(s))
            if (x < 70 - 1e-9 || x > p.width - 170 + 1e-9 || y < 34 - 1e-9 || y > p.height - 50 + 1e-9) return false;
        return true;
    };
    std::string s = io::svg_line_plot(p);
    auto pts = drawn_points(s);
    REQUIRE(pts.size() == 8);
    CHECK(pts[0].first == Approx(70));                    // x = 0
    CHECK(pts[3].first == Approx(p.width - 170));         // x = 30
    CHECK(pts[4].second == Approx(34));                   // y = 6.5 (max) at the top
    CHECK(pts[7].second == Approx(p.height - 50));        // y = 3.5 (min) at the bottom
    CHECK(inside(s));
    // the marker at x = 20 is 2/3 of the way across
    CHECK(s.find("x1=\"" + io::svg_detail::num(70 + (p.width - 240) * 2.0 / 3.0) + "\"") != std::string::npos);
    // fixed y range [4, 6]: 6.5 and 3.5 are clamped to the frame
    p.y_min = 4.0, p.y_max = 6.0;
    CHECK(io::plot_y_range(p).lo == 4.0);
    CHECK(io::plot_y_range(p).hi == 6.0);
    s = io::svg_line_plot(p);
    CHECK(inside(s));
    pts = drawn_points(s);
    CHECK(pts[4].second == Approx(34));
    CHECK(pts[7].second == Approx(p.height - 50));
    // a one-sided fixed end keeps the data's other end
    io::LinePlot q = two_series();
    q.nice = false;
    q.y_min = 0.0;
    CHECK(io::plot_y_range(q).lo == 0.0);
    CHECK(io::plot_y_range(q).hi == 6.5);
    // a constant series gets a non-empty range around its value
    io::LinePlot c;
    c.series.push_back(ser("flat", {1, 2, 3}, {2.0, 2.0, 2.0}));
    c.nice = false;
    CHECK(io::plot_y_range(c).lo == 1.5);
    CHECK(io::plot_y_range(c).hi == 2.5);
    CHECK(xml_problem(io::svg_line_plot(c)) == "");
    // nice ends: data 0.13 .. 0.87 with about 5 ticks -> [0, 1], ticks every 0.2 (labels 0 .. 1)
    io::LinePlot n;
    n.series.push_back(ser("n", {0, 1}, {0.13, 0.87}));
    const io::AxisRange nr = io::plot_y_range(n);
    CHECK(nr.lo == Approx(0.0).margin(1e-12));
    CHECK(nr.hi == Approx(1.0));
    CHECK(nr.step == Approx(0.2));
    const std::string ns = io::svg_line_plot(n);
    CHECK(ns.find(">0.6</text>") != std::string::npos);
    CHECK(ns.find(">-0</text>") == std::string::npos);
    CHECK(io::nice_step(7.3, 5) == Approx(2.0));
    CHECK(io::nice_step(0.03, 3) == Approx(0.01));
    CHECK(io::nice_step(0.25, 5) == Approx(0.05));  // not 0.1 by rounding
    CHECK(io::nice_step(0.2500001, 5) == Approx(0.05));
    CHECK(io::nice_step(9.0, 1) == Approx(10.0));
    io::LinePlot w = two_series();  // y 3.5 .. 6.5, about 5 ticks: step 0.5, ends already round
    CHECK(io::plot_y_range(w).lo == Approx(3.5));
    CHECK(io::plot_y_range(w).hi == Approx(6.5));
    CHECK(io::plot_y_range(w).step == Approx(0.5));
}

TEST_CASE("svg plot: NaN and inf break lines, empty series and empty plots are valid", "[svg]") {
    io::LinePlot p;
    p.series.push_back(ser("gappy", {0, 1, 2, 3, 4, 5, 6}, {1, 2, kNaN, 3, 4, std::numeric_limits<double>::infinity(), 5}));
    p.series.push_back(ser("empty", {}, {}));
    p.series.push_back(ser("all missing", {0, 1}, {kNaN, kNaN}));
    p.markers.push_back(mark(kNaN, "nowhere"));
    const std::string s = io::svg_line_plot(p);
    CHECK(xml_problem(s) == "");
    CHECK(s.find("nan") == std::string::npos);
    CHECK(s.find("inf") == std::string::npos);
    CHECK(count(s, "<polyline") == 2);  // [0,1] and [3,4]
    CHECK(count(s, "<circle") == 1);    // the lone point at x = 6
    CHECK(count(s, "class=\"marker\"") == 0);
    CHECK(s.find(">empty</text>") != std::string::npos);  // still in the legend
    CHECK(io::plot_y_range(p).lo == 1.0);
    CHECK(io::plot_y_range(p).hi == 5.0);
    // nothing at all: [0, 1] on both axes
    io::LinePlot none;
    none.title = "no data yet";
    const std::string e = io::svg_line_plot(none);
    CHECK(xml_problem(e) == "");
    CHECK(count(e, "<polyline") == 0);
    CHECK(io::plot_x_range(none).lo == 0.0);
    CHECK(io::plot_x_range(none).hi == 1.0);
}

TEST_CASE("svg plot: bad input is an error naming the plot and series, write_svg writes the file", "[svg]") {
    io::LinePlot p = two_series();
    p.title = "ce";
    p.series[1].y.pop_back();
    CHECK_THROWS_WITH(io::svg_line_plot(p), Catch::Contains("series 'tsjt' has 4 x values but 3 y values"));
    io::LinePlot r = two_series();
    r.title = "ce";
    r.y_min = 3.0, r.y_max = 3.0;
    CHECK_THROWS_WITH(io::svg_line_plot(r), Catch::Contains("svg_plot 'ce': y range [3, 3] is empty"));
    r.y_max = kNaN;
    CHECK_THROWS_WITH(io::svg_line_plot(r), Catch::Contains("y_max = nan is not finite"));
    io::LinePlot t = two_series();
    t.width = 10;
    CHECK_THROWS_WITH(io::svg_line_plot(t), Catch::Contains("is too small"));

    const std::string path = (std::filesystem::temp_directory_path() / "moekd_svg_plot_test.svg").string();
    io::write_svg(path, two_series());
    std::ifstream f(path);
    const std::string back((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(back == io::svg_line_plot(two_series()));
    std::filesystem::remove(path);
}
