{{/*
The chart's name, at most 63 characters (a DNS label).
*/}}
{{- define "kube-ecr-cleanup-controller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the objects: the release name, plus the chart name unless the release name
contains it; at most 63 characters.
*/}}
{{- define "kube-ecr-cleanup-controller.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-ecr-cleanup-controller.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "kube-ecr-cleanup-controller.labels" -}}
helm.sh/chart: {{ include "kube-ecr-cleanup-controller.chart" . }}
{{ include "kube-ecr-cleanup-controller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: never change them, a Deployment's selector is immutable.
*/}}
{{- define "kube-ecr-cleanup-controller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kube-ecr-cleanup-controller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kube-ecr-cleanup-controller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kube-ecr-cleanup-controller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kube-ecr-cleanup-controller.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
THE mapping from values to the controller's flags: values path -> flag (long spelling, without
dashes). Every setting the chart renders from values goes through it; tests/test_chart.py checks
it against controller.cli.FLAGS, so a new flag fails a test until it is added here, to
values.yaml and to values.schema.json. Flags the chart sets itself (the connection, the config
file, the Lease namespace, the listen address) are in "kube-ecr-cleanup-controller.args".
*/}}
{{- define "kube-ecr-cleanup-controller.settingFlags" -}}
repos: repos
excludeRepos: exclude-repos
dryRun: dry-run
disposal: disposal
maxImages: max-images
keepTags: keep-tags
keepFilters: keep-filters
keepYoungerThan: keep-younger-than
keepPulledWithin: keep-pulled-within
maxDeletionsPerCycle: max-deletions-per-cycle
deleteOrphanedArtifacts: delete-orphaned-artifacts
deleteArchivedAfter: delete-archived-after
interval: interval
intervalJitter: interval-jitter
concurrency: concurrency
region: region
registryId: registry-id
namespaces: namespaces
protectWorkloads: protect-workloads
protectResources: protect-resources
protectEcs: protect-ecs
protectLambda: protect-lambda
awsSourcesInterval: aws-sources-interval
ecsKeepTaskDefinitions: ecs-keep-task-definitions
allowEmpty: allow-empty
allowEmptyNamespaces: allow-empty-namespaces
allowEmptyClusters: allow-empty-clusters
maxStaleness: max-staleness
output: output
logFormat: log-format
verbosity: v
leaderElection.enabled: leader-elect
leaderElection.leaseName: lease-name
leaderElection.leaseDuration: lease-duration
{{- end }}

{{/*
A value as a flag's text: lists comma-joined, whole numbers without a decimal point.
*/}}
{{- define "kube-ecr-cleanup-controller.flagText" -}}
{{- if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}{{ $items = append $items (include "kube-ecr-cleanup-controller.flagText" .) }}{{ end }}
{{- join "," $items }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
The value at a dotted path of .Values, or nil.
*/}}
{{- define "kube-ecr-cleanup-controller.valueAt" -}}
{{- $value := .root.Values }}
{{- range splitList "." .path }}
{{- if kindIs "map" $value }}{{ $value = index $value . }}{{ else }}{{ $value = nil }}{{ end }}
{{- end }}
{{- toJson (dict "value" $value) }}
{{- end }}

{{- define "kube-ecr-cleanup-controller.mountDir" -}}/etc/kube-ecr-cleanup-controller{{- end }}
{{- define "kube-ecr-cleanup-controller.configPath" -}}{{ include "kube-ecr-cleanup-controller.mountDir" . }}/config/rules.yaml{{- end }}
{{- define "kube-ecr-cleanup-controller.kubeconfigPath" -}}{{ include "kube-ecr-cleanup-controller.mountDir" . }}/kubeconfig/{{ .Values.kubeconfig.key }}{{- end }}

{{/*
The container's args, as a YAML list: the settings through the mapping above (a null value
passes no flag; an empty list passes an empty one, e.g. `--keep-tags=` keeps no tag), then the
flags the chart owns, then extraArgs.
*/}}
{{- define "kube-ecr-cleanup-controller.args" -}}
{{- $root := . }}
{{- range .Values.allowEmptyNamespaces }}
{{- if not (has . $root.Values.namespaces) }}
{{- fail (printf "allowEmptyNamespaces: %s is not in namespaces (only listed namespaces are checked one by one)" .) }}
{{- end }}
{{- end }}
{{- range $path, $flag := include "kube-ecr-cleanup-controller.settingFlags" . | fromYaml }}
{{- $value := (include "kube-ecr-cleanup-controller.valueAt" (dict "root" $root "path" $path) | fromJson).value }}
{{- if not (kindIs "invalid" $value) }}
- {{ printf "--%s=%s" $flag (include "kube-ecr-cleanup-controller.flagText" $value) | quote }}
{{- end }}
{{- end }}
{{- if .Values.kubeconfig.secretName }}
- {{ printf "--kubeconfig=%s" (include "kube-ecr-cleanup-controller.kubeconfigPath" .) | quote }}
{{- if .Values.kubeContexts }}
- {{ printf "--kube-context=%s" (join "," .Values.kubeContexts) | quote }}
{{- end }}
{{- else }}
{{- if .Values.kubeContexts }}
{{- fail "kubeContexts: needs kubeconfig.secretName (a Secret holding a kubeconfig with those contexts)" }}
{{- end }}
- "--in-cluster=true"
{{- end }}
{{- if .Values.repositoryOverrides }}
- {{ printf "--config=%s" (include "kube-ecr-cleanup-controller.configPath" .) | quote }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
- {{ printf "--lease-namespace=%s" .Release.Namespace | quote }}
{{- end }}
- {{ printf "--metrics-address=:%s" (include "kube-ecr-cleanup-controller.flagText" .Values.metrics.port) | quote }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
The --config file: values' repositoryOverrides in file order (the first match wins), with the
controller's key spelling; `name` first, then the set keys (null kept: it turns a rule off).
Values are written as JSON, which is YAML.
*/}}
{{- define "kube-ecr-cleanup-controller.configFile" -}}
{{- $keys := list (list "maxImages" "max-images") (list "keepTags" "keep-tags") (list "keepFilters" "keep-filters") (list "keepYoungerThan" "keep-younger-than") (list "keepPulledWithin" "keep-pulled-within") (list "maxDeletionsPerCycle" "max-deletions-per-cycle") (list "deleteOrphanedArtifacts" "delete-orphaned-artifacts") (list "deleteArchivedAfter" "delete-archived-after") }}
repositories:
{{- range .Values.repositoryOverrides }}
  - name: {{ .name | toJson }}
{{- $entry := . }}
{{- range $keys }}
{{- if hasKey $entry (first .) }}
    {{ last . }}: {{ include "kube-ecr-cleanup-controller.configValue" (index $entry (first .)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kube-ecr-cleanup-controller.configValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/*
The workload kinds the rendered --protect-workloads enables, as a list (controller semantics:
`all` = every kind, `none` = none).
*/}}
{{- define "kube-ecr-cleanup-controller.allWorkloadKinds" -}}
[deployments, replicasets, statefulsets, daemonsets, jobs, cronjobs, controllerrevisions]
{{- end }}
{{- define "kube-ecr-cleanup-controller.workloadKinds" -}}
{{- $value := .Values.protectWorkloads }}
{{- if kindIs "slice" $value }}
{{- toJson $value }}
{{- else if eq $value "all" }}
{{- include "kube-ecr-cleanup-controller.allWorkloadKinds" . | fromYamlArray | toJson }}
{{- else }}
{{- toJson list }}
{{- end }}
{{- end }}

{{/*
The RBAC rules for reading what protects images: list and watch on pods and on the enabled
workload kinds, by API group.
*/}}
{{- define "kube-ecr-cleanup-controller.readRules" -}}
{{- $kinds := include "kube-ecr-cleanup-controller.workloadKinds" . | fromJsonArray }}
{{- $apps := list }}
{{- $batch := list }}
{{- range include "kube-ecr-cleanup-controller.allWorkloadKinds" . | fromYamlArray }}
{{- if has . $kinds }}
{{- if has . (list "jobs" "cronjobs") }}{{ $batch = append $batch . }}{{ else }}{{ $apps = append $apps . }}{{ end }}
{{- end }}
{{- end }}
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- if $apps }}
- apiGroups: [apps]
  resources: [{{ join ", " $apps }}]
  verbs: [list, watch]
{{- end }}
{{- if $batch }}
- apiGroups: [batch]
  resources: [{{ join ", " $batch }}]
  verbs: [list, watch]
{{- end }}
{{- include "kube-ecr-cleanup-controller.customRules" (dict "root" . "namespaced" true "cluster" (not .Values.namespaces)) }}
{{- end }}

{{/*
The custom resources that protectResources enables (--protect-resources), as a JSON list of
{group, resource, namespaced}: a preset's from files/resource-presets.yaml (generated from
controller/resources.py), an entry's from its GROUP/VERSION/RESOURCE and its scope=cluster.
*/}}
{{- define "kube-ecr-cleanup-controller.customResources" -}}
{{- $presets := .Files.Get "files/resource-presets.yaml" | fromYaml }}
{{- $found := list }}
{{- range .Values.protectResources }}
{{- if contains "/" . }}
{{- $parts := splitList "/" (first (splitList ":" .)) }}
{{- if ne (len $parts) 3 }}
{{- fail (printf "protectResources: %q: expected GROUP/VERSION/RESOURCE:KIND=PATH" .) }}
{{- end }}
{{- $found = append $found (dict "group" (index $parts 0) "resource" (index $parts 2) "namespaced" (not (has "scope=cluster" (splitList ";" (last (splitList ":" .)))))) }}
{{- else if hasKey $presets . }}
{{- $found = concat $found (index $presets .) }}
{{- else }}
{{- fail (printf "protectResources: unknown preset %q; presets: %s" . (keys $presets | sortAlpha | join ", ")) }}
{{- end }}
{{- end }}
{{- toJson $found }}
{{- end }}

{{/*
list and watch on the enabled custom resources, one rule per API group: the namespaced ones
(`namespaced`), the cluster-scoped ones (`cluster`), or both.
*/}}
{{- define "kube-ecr-cleanup-controller.customRules" -}}
{{- $byGroup := dict }}
{{- range include "kube-ecr-cleanup-controller.customResources" .root | fromJsonArray }}
{{- if or (and .namespaced $.namespaced) (and (not .namespaced) $.cluster) }}
{{- $_ := set $byGroup .group (append (get $byGroup .group | default list) .resource | uniq) }}
{{- end }}
{{- end }}
{{- range $group := keys $byGroup | sortAlpha }}
- apiGroups: [{{ $group }}]
  resources: [{{ get $byGroup $group | sortAlpha | join ", " }}]
  verbs: [list, watch]
{{- end }}
{{- end }}
