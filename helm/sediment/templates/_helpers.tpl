{{/* Chart name. */}}
{{- define "sediment.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the StatefulSet name and the prefix of every resource. Broker pods are
<fullname>-N, so leave room for the ordinal and the "-external" Service suffix.
*/}}
{{- define "sediment.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sediment.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Headless Service: peer discovery and the brokers' stable DNS names. */}}
{{- define "sediment.headlessName" -}}
{{- printf "%s-headless" (include "sediment.fullname" .) }}
{{- end }}

{{- define "sediment.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sediment.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sediment.labels" -}}
helm.sh/chart: {{ include "sediment.chart" . }}
{{ include "sediment.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sediment
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sediment.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sediment.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sediment.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Stable DNS name of broker N (argument: dict "root" $ "i" N). */}}
{{- define "sediment.brokerHost" -}}
{{- $root := .root }}
{{- printf "%s-%d.%s.%s.svc.%s" (include "sediment.fullname" $root) (int .i) (include "sediment.headlessName" $root) $root.Release.Namespace $root.Values.clusterDomain }}
{{- end }}

{{/* How many brokers form the cluster at its first start (broker.initialVoters, 0 = all). */}}
{{- define "sediment.initialVoters" -}}
{{- $n := int (default 0 .Values.broker.initialVoters) }}
{{- if eq $n 0 }}{{ $n = int .Values.replicaCount }}{{ end }}
{{- if gt $n (int .Values.replicaCount) }}
{{- fail (printf "broker.initialVoters (%d) is more than replicaCount (%d): remove brokers with sediment cluster remove-broker, then lower both" $n (int .Values.replicaCount)) }}
{{- end }}
{{- $n }}
{{- end }}

{{/* The Raft voters a broker starts with: nodeIdBase+N=<broker N>:<raft port> for the initial
     voters, comma-separated. A broker beyond them is not in the list: it joins the running
     cluster when `sediment cluster add-broker` adds it. */}}
{{- define "sediment.peers" -}}
{{- $root := . }}
{{- $peers := list }}
{{- range $i := until (int (include "sediment.initialVoters" .)) }}
{{- $peers = append $peers (printf "%d=%s:%d" (add $root.Values.broker.nodeIdBase $i) (include "sediment.brokerHost" (dict "root" $root "i" $i)) (int $root.Values.broker.ports.raft)) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* Bytes of a Kubernetes quantity with a binary or decimal suffix (Ki, Mi, Gi, Ti, k, M, G, T)
     or none; fails on anything else, so a typo is an error at install time. */}}
{{- define "sediment.quantityBytes" -}}
{{- $q := toString . }}
{{- $m := regexFind "^[0-9]+" $q }}
{{- if not $m }}{{ fail (printf "%q is not a size the chart understands (a whole number with Ki, Mi, Gi, Ti, k, M, G or T)" $q) }}{{ end }}
{{- $unit := trimPrefix $m $q }}
{{- $mult := dict "" 1 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 }}
{{- if not (hasKey $mult $unit) }}{{ fail (printf "%q is not a size the chart understands (a whole number with Ki, Mi, Gi, Ti, k, M, G or T)" $q) }}{{ end }}
{{- mul (int64 $m) (int64 (get $mult $unit)) }}
{{- end }}

{{- define "sediment.objectStoreUrl" -}}
{{- if eq .Values.objectStore.type "s3" }}
{{- $prefix := trimAll "/" .Values.objectStore.s3.prefix }}
{{- if $prefix }}
{{- printf "s3://%s/%s" .Values.objectStore.s3.bucket $prefix }}
{{- else }}
{{- printf "s3://%s" .Values.objectStore.s3.bucket }}
{{- end }}
{{- else }}
{{- printf "file://%s" .Values.objectStore.file.path }}
{{- end }}
{{- end }}

{{/*
Advertised listener of broker N, or "" when it is only known at run time
(external.type HostPort: the node IP comes from the downward API).
*/}}
{{- define "sediment.advertisedListener" -}}
{{- $root := .root }}
{{- $i := int .i }}
{{- $ext := $root.Values.external }}
{{- $pod := printf "%s-%d" (include "sediment.fullname" $root) $i }}
{{- if not $ext.enabled }}
{{- printf "%s:%d" (include "sediment.brokerHost" (dict "root" $root "i" $i)) (int $root.Values.broker.ports.kafka) }}
{{- else if eq $ext.type "HostPort" }}
{{- else }}
{{- $host := "" }}
{{- if gt (len $ext.advertisedHosts) $i }}
{{- $host = index $ext.advertisedHosts $i }}
{{- else if and $ext.domain (eq $ext.type "LoadBalancer") }}
{{- $host = printf "%s.%s" $pod $ext.domain }}
{{- else if $ext.domain }}
{{- $host = $ext.domain }}
{{- else }}
{{- fail (printf "external.enabled with type %s needs external.domain or external.advertisedHosts[%d]" $ext.type $i) }}
{{- end }}
{{- if eq $ext.type "NodePort" }}
{{- printf "%s:%d" $host (add $ext.nodePortBase $i) }}
{{- else }}
{{- printf "%s:%d" $host (int $ext.port) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The broker config of broker N (TOML, keys as in `sediment serve --help` with
underscores). One file per broker lets a shell-less image pick its own file with
`--config /etc/sediment/$(POD_NAME).toml`.
*/}}
{{- define "sediment.brokerConfig" -}}
{{- $root := .root }}
{{- $i := int .i }}
{{- $v := $root.Values }}
{{- $adv := include "sediment.advertisedListener" (dict "root" $root "i" $i) -}}
# Broker {{ $i }} of {{ include "sediment.fullname" $root }} (pod {{ include "sediment.fullname" $root }}-{{ $i }}).
node_id = {{ add $v.broker.nodeIdBase $i }}
listen = {{ printf "0.0.0.0:%d" (int $v.broker.ports.kafka) | quote }}
{{- if $adv }}
advertised_listener = {{ $adv | quote }}
{{- end }}
admin_listen = {{ printf "0.0.0.0:%d" (int $v.broker.ports.admin) | quote }}
raft_listen = {{ printf "0.0.0.0:%d" (int $v.broker.ports.raft) | quote }}
peers = {{ include "sediment.peers" $root | quote }}
cluster_secret_file = "/etc/sediment-cluster/cluster-secret"
{{- with $v.broker.clusterId }}
cluster_id = {{ . | quote }}
{{- end }}
data_dir = {{ $v.storage.mountPath | quote }}
object_store = {{ include "sediment.objectStoreUrl" $root | quote }}
cache_dir = "/var/cache/sediment"
cache_size = {{ int64 $v.cache.sizeBytes | toString | quote }}
{{- $pct := int $v.storage.hotLog.maxLocalPercent }}
{{- if gt $pct 0 }}
{{- $hot := int64 (include "sediment.quantityBytes" $v.storage.hotLog.size) }}
max_local_bytes = {{ div (mul $hot $pct) 100 | toString | quote }}
{{- end }}
{{- with $v.broker.extraConfig }}
{{ toToml . }}
{{- end }}
{{- with $v.broker.topicDefaults }}

# Broker-wide defaults for new topics (Kafka config names; values as strings).
[topic_defaults]
{{- range $k, $val := . }}
{{ $k | quote }} = {{ include "sediment.tomlScalar" $val | trimAll "\"" | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Hot-log volume name. */}}
{{- define "sediment.dataVolume" -}}data{{- end }}

{{/* A scalar as TOML: strings quoted, whole numbers without an exponent. */}}
{{- define "sediment.tomlScalar" -}}
{{- if kindIs "string" . }}{{ quote . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}{{ int64 . }}
{{- else }}{{ . }}
{{- end }}
{{- end }}

{{- define "sediment.otelResourceAttributes" -}}
{{- $attrs := list (printf "service.namespace=%s" .Release.Namespace) (printf "sediment.cluster=%s" (include "sediment.fullname" .)) }}
{{- range $k, $v := .Values.otlp.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $v) }}
{{- end }}
{{- join "," $attrs }}
{{- end }}
