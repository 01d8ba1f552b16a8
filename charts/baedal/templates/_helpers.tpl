{{/*
Names, labels and the tables every template shares.
*/}}

{{/* The chart's name ("baedal" unless nameOverride). */}}
{{- define "baedal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* The prefix of object names: the release name, with the chart name unless it already holds it. */}}
{{- define "baedal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* helm.sh/chart: name and version. */}}
{{- define "baedal.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The labels of every object of a process; call with (dict "root" $ "process" "order").
app.kubernetes.io/name is "<chart>-<process>", so that the selectors need only name and instance.
*/}}
{{- define "baedal.labels" -}}
helm.sh/chart: {{ include "baedal.chart" .root }}
{{ include "baedal.selectorLabels" . }}
app.kubernetes.io/component: {{ .process }}
app.kubernetes.io/part-of: {{ include "baedal.name" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/* The selector of a process's pods: only the name and instance labels, which never change. */}}
{{- define "baedal.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "baedal.name" .root) .process }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{/* The image reference: repository with the digest, or with the tag (default: appVersion). */}}
{{- define "baedal.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The Dapr apps and what each publishes and reads on the pub/sub: the streams of the code
(services.topics.stream_of, each service's subscriptions); tests/chart checks this table against
the code and against components/pubsub.yaml. Every app may also publish its own dead-letter topic.
*/}}
{{- define "baedal.topology" -}}
gateway:
  publishes: []
  reads: []
  stateStore: false
order:
  publishes: [order-events]
  reads: [order-events, payment-events, restaurant-events, delivery-events]
  stateStore: true
payment:
  publishes: [payment-events]
  reads: [order-events]
  stateStore: true
restaurant:
  publishes: [restaurant-events]
  reads: [order-events, restaurant-events]
  stateStore: true
delivery:
  publishes: [delivery-events]
  reads: [order-events, restaurant-events, delivery-events]
  stateStore: true
notification:
  publishes: []
  reads: [order-events, restaurant-events, delivery-events]
  stateStore: true
{{- end -}}

{{/* The Dapr apps on the pub/sub: the services and the operator (which publishes restaurant-events). */}}
{{- define "baedal.pubsubApps" -}}
{{- $topology := include "baedal.topology" . | fromYaml -}}
{{- $apps := dict -}}
{{- range $name := list "order" "payment" "restaurant" "delivery" "notification" -}}
{{- $_ := set $apps $name (index $topology $name) -}}
{{- end -}}
{{- $_ := set $apps "operator" (dict "publishes" (list "restaurant-events") "reads" list) -}}
{{- toYaml $apps -}}
{{- end -}}

{{/* The services with a state store, in order. */}}
{{- define "baedal.services" -}}
{{- toJson (list "order" "payment" "restaurant" "delivery" "notification") -}}
{{- end -}}

{{/* The Dapr apps with a Deployment of the shared template, in order. */}}
{{- define "baedal.processes" -}}
{{- toJson (list "gateway" "order" "payment" "restaurant" "delivery" "notification") -}}
{{- end -}}

{{/* A process's effective values: defaults, overridden by services.<process>; call with (dict "root" $ "process" name). */}}
{{- define "baedal.processValues" -}}
{{- $defaults := deepCopy .root.Values.defaults -}}
{{- $own := index .root.Values.services .process | default dict | deepCopy -}}
{{- toYaml (mergeOverwrite $defaults $own) -}}
{{- end -}}

{{/* Whether a process is scaled by an HPA or a ScaledObject ("true" or ""). */}}
{{- define "baedal.autoscaled" -}}
{{- $values := include "baedal.processValues" . | fromYaml -}}
{{- if and (ne .root.Values.autoscaling.mode "none") $values.autoscaling.enabled -}}true{{- end -}}
{{- end -}}

{{/* The fewest replicas a process runs with. */}}
{{- define "baedal.minReplicas" -}}
{{- $values := include "baedal.processValues" . | fromYaml -}}
{{- if include "baedal.autoscaled" . -}}{{ $values.autoscaling.minReplicas }}{{- else -}}{{ $values.replicas }}{{- end -}}
{{- end -}}

{{/* Secret names and keys. */}}
{{- define "baedal.jwtSecretName" -}}
{{- default (printf "%s-jwt" (include "baedal.fullname" .)) .Values.jwt.existingSecret -}}
{{- end -}}
{{- define "baedal.postgresqlSecretName" -}}
{{- default (printf "%s-postgresql" (include "baedal.fullname" .)) .Values.postgresql.existingSecret -}}
{{- end -}}
{{- define "baedal.redisSecretName" -}}
{{- default (printf "%s-redis" (include "baedal.fullname" .)) .Values.pubsub.redis.existingSecret -}}
{{- end -}}
{{- define "baedal.redisHasPassword" -}}
{{- if or .Values.pubsub.redis.existingSecret .Values.pubsub.redis.password -}}true{{- end -}}
{{- end -}}
{{- define "baedal.kafkaSecretName" -}}
{{- default (printf "%s-kafka" (include "baedal.fullname" .)) .Values.pubsub.kafka.existingSecret -}}
{{- end -}}

{{/* The simulator's Service URL. */}}
{{- define "baedal.simulatorUrl" -}}
{{- printf "http://%s-paygate.%s.svc:%v" (include "baedal.fullname" .) .Release.Namespace .Values.paygate.simulator.port -}}
{{- end -}}

{{/* The restricted security context of every container (Pod Security Standards "restricted"). */}}
{{- define "baedal.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "baedal.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The scaling behavior of every HPA (and of KEDA's): up at once and fast, down after a calm spell. */}}
{{- define "baedal.behavior" -}}
{{- $scaling := .Values.autoscaling -}}
scaleUp:
  stabilizationWindowSeconds: {{ $scaling.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ $scaling.scaleUp.percent }}
      periodSeconds: {{ $scaling.scaleUp.periodSeconds }}
    - type: Pods
      value: {{ $scaling.scaleUp.pods }}
      periodSeconds: {{ $scaling.scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ $scaling.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Percent
      value: {{ $scaling.scaleDown.percent }}
      periodSeconds: {{ $scaling.scaleDown.periodSeconds }}
{{- end -}}

{{/*
checkov (tests/chart/test_checkov.py scans every rendered object): the findings this chart accepts,
each with its reason. Call with (dict "root" $ "secrets" true "apiToken" false "runToCompletion" false).
*/}}
{{- define "baedal.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_15=The image is pinned by tag (appVersion) or image.digest, so IfNotPresent pulls each version once per node"
checkov.io/skip2: "CKV_K8S_43=image.digest pins the image by digest; the default is the chart's appVersion tag, and skaffold sets its own"
checkov.io/skip3: "CKV2_K8S_6=NetworkPolicies depend on the cluster (CNI, ingress controller and Dapr control-plane namespaces); docs/kubernetes.md shows one"
{{- if .secrets }}
checkov.io/skip4: "CKV_K8S_35=The apps read settings from BAEDAL_* variables; each secret comes by secretKeyRef from a Secret, never as a plain value"
{{- end }}
{{- if .apiToken }}
checkov.io/skip5: "CKV_K8S_38=The operator watches and patches Restaurants through the Kubernetes API with this token"
{{- end }}
{{- if .runToCompletion }}
checkov.io/skip6: "CKV_K8S_8=A helm test pod runs once to completion; there is nothing to probe"
checkov.io/skip7: "CKV_K8S_9=A helm test pod runs once to completion; nothing routes traffic to it"
{{- end }}
{{- end -}}
