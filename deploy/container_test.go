package deploy_test

import (
	"bufio"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// yamlBlock returns the lines nested under key (a "key:" line) in text, or
// "" when absent; enough to inspect docker-compose.yml without a YAML
// library. key is a path: "services", "proxyusage", ...
func yamlBlock(text string, path ...string) string {
	for _, key := range path {
		lines := strings.Split(text, "\n")
		top := -1 // indentation of the block's own keys
		for _, l := range lines {
			trimmed := strings.TrimLeft(l, " ")
			if trimmed != "" && !strings.HasPrefix(trimmed, "#") {
				if ind := len(l) - len(trimmed); top < 0 || ind < top {
					top = ind
				}
			}
		}
		var out []string
		indent := -1
		for _, l := range lines {
			trimmed := strings.TrimLeft(l, " ")
			ind := len(l) - len(trimmed)
			if indent < 0 {
				if ind == top && (trimmed == key+":" || strings.HasPrefix(trimmed, key+": ")) {
					indent = ind
				}
				continue
			}
			if trimmed != "" && !strings.HasPrefix(trimmed, "#") && ind <= indent {
				break
			}
			out = append(out, l)
		}
		if indent < 0 {
			return ""
		}
		text = strings.Join(out, "\n")
	}
	return text
}

func TestComposeWiring(t *testing.T) {
	compose := readFile(t, "docker-compose.yml")
	services := yamlBlock(compose, "services")
	for _, name := range []string{"timescaledb", "proxyusage", "prometheus", "grafana"} {
		svc := yamlBlock(services, name)
		if svc == "" {
			t.Errorf("docker-compose.yml has no service %s", name)
			continue
		}
		if yamlBlock(svc, "healthcheck") == "" {
			t.Errorf("service %s has no health check", name)
		}
		if img := regexp.MustCompile(`(?m)^\s+image: (\S+)`).FindStringSubmatch(svc); img == nil ||
			!regexp.MustCompile(`:[v0-9][0-9.]*[0-9](-[a-z0-9]+)?$`).MatchString(img[1]) && name != "proxyusage" {
			t.Errorf("service %s: image must carry a pinned version tag: %v", name, img)
		}
	}
	ts := yamlBlock(services, "timescaledb")
	if !strings.Contains(ts, "image: timescale/timescaledb:") {
		t.Error("the database must be the official timescale/timescaledb image")
	}
	app := yamlBlock(services, "proxyusage")
	for _, want := range []string{"build: .", "DATABASE_URL: postgres://", "@timescaledb:5432/proxyusage", "JWT_SECRET:", `"8080:8080"`} {
		if !strings.Contains(app, want) {
			t.Errorf("service proxyusage lacks %q", want)
		}
	}
	if !strings.Contains(yamlBlock(app, "depends_on", "timescaledb"), "condition: service_healthy") {
		t.Error("proxyusage must wait for a healthy database")
	}
	graf := yamlBlock(services, "grafana")
	for _, dep := range []string{"prometheus", "timescaledb"} {
		if !strings.Contains(yamlBlock(graf, "depends_on", dep), "condition: service_healthy") {
			t.Errorf("grafana must wait for a healthy %s", dep)
		}
	}
	if !strings.Contains(graf, `"3000:3000"`) || !strings.Contains(yamlBlock(services, "prometheus"), `"9090:9090"`) {
		t.Error("Grafana and Prometheus must publish :3000 and :9090")
	}
	prom := yamlBlock(services, "prometheus")
	for _, want := range []string{
		"./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
		"./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro",
	} {
		if !strings.Contains(prom, want) {
			t.Errorf("prometheus lacks the mount %q", want)
		}
	}
	// The shipped scrape config targets the compose service under the job
	// name the alert rules select.
	pcfg := readFile(t, "deploy", "prometheus", "prometheus.yml")
	if !strings.Contains(pcfg, "job_name: proxyusage") || !strings.Contains(pcfg, `targets: ["proxyusage:8080"]`) {
		t.Error("prometheus.yml must scrape proxyusage:8080 as job proxyusage")
	}
	volumes := yamlBlock(compose, "volumes")
	for _, v := range []string{"timescaledb-data", "prometheus-data", "grafana-data"} {
		if !strings.Contains(volumes, "  "+v+":") || !strings.Contains(services, " - "+v+":") {
			t.Errorf("named volume %s is not declared and used", v)
		}
	}
}

// composeCommand finds `docker compose` (the plugin) or, failing that, the
// standalone docker-compose.
func composeCommand(t *testing.T) []string {
	if _, err := exec.LookPath("docker"); err == nil {
		if exec.Command("docker", "compose", "version").Run() == nil {
			return []string{"docker", "compose"}
		}
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	t.Skip("neither the docker compose plugin nor docker-compose is installed")
	return nil
}

func TestDockerComposeConfigValidates(t *testing.T) {
	cmd := composeCommand(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, cmd[0], append(cmd[1:], "-f", "docker-compose.yml", "config", "-q")...)
	c.Dir = root
	// Defaults apply: the file must validate without an .env.
	c.Env = append(os.Environ(), "POSTGRES_PASSWORD=", "JWT_SECRET=", "GRAFANA_ADMIN_PASSWORD=")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s config -q: %v\n%s", strings.Join(cmd, " "), err, out)
	}
	c = exec.CommandContext(ctx, cmd[0], append(cmd[1:], "-f", "docker-compose.yml", "config", "--services")...)
	c.Dir = root
	out, err := c.Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(out))
	for _, want := range []string{"timescaledb", "proxyusage", "prometheus", "grafana"} {
		if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+want+" ") {
			t.Errorf("compose services %v lack %s", got, want)
		}
	}
}

func TestDockerfile(t *testing.T) {
	df := readFile(t, "Dockerfile")
	var froms []string
	var stages [][]string // instructions per stage
	sc := bufio.NewScanner(strings.NewReader(df))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "FROM ") {
			froms = append(froms, l)
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], l)
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got %v", froms)
	}
	for _, f := range froms {
		img := strings.Fields(f)[1]
		if !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
			t.Errorf("base image %s is not pinned", img)
		}
	}
	build := strings.Join(stages[0], "\n")
	final := stages[len(stages)-1]
	if !strings.Contains(build, "CGO_ENABLED=0") || !strings.Contains(build, "./cmd/proxyusage") {
		t.Error("the build stage must build ./cmd/proxyusage with CGO_ENABLED=0")
	}
	// The builder's Go is at least the go.mod language version.
	gomod := readFile(t, "go.mod")
	goVer := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(gomod)
	img := regexp.MustCompile(`golang:(\d+\.\d+)`).FindStringSubmatch(froms[0])
	if goVer == nil || img == nil || goVer[1] != img[1] {
		t.Errorf("builder %q does not match go.mod's go %v", froms[0], goVer)
	}
	var user string
	for _, l := range final {
		if strings.HasPrefix(l, "USER ") {
			user = strings.TrimSpace(strings.TrimPrefix(l, "USER "))
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("the runtime stage must run as a non-root user, USER = %q", user)
	}
	finalText := strings.Join(final, "\n")
	for _, want := range []string{"COPY --from=build", "HEALTHCHECK", `ENTRYPOINT ["/usr/local/bin/proxyusage"]`, `CMD ["serve"]`, "EXPOSE 8080"} {
		if !strings.Contains(finalText, want) {
			t.Errorf("runtime stage lacks %q", want)
		}
	}
	ignore := readFile(t, ".dockerignore")
	for _, want := range []string{".git", ".data"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(ignore) {
			t.Errorf(".dockerignore must exclude %s", want)
		}
	}
}

// The Dockerfile's build flags give a static binary that runs on a bare
// image.
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out := filepath.Join(t.TempDir(), "proxyusage")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/proxyusage")
	c.Dir = root
	c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOFLAGS=-mod=readonly")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("binary is dynamically linked (%v)", p.Type)
		}
	}
	if b, err := exec.Command(out, "help").CombinedOutput(); err != nil || !strings.Contains(string(b), "serve") {
		t.Fatalf("proxyusage help: %v\n%s", err, b)
	}
}
