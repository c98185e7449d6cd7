{{/* Names and labels. */}}
{{- define "geoml-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "geoml-hub.fullname" -}}
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

{{/* "geoml-hub.component" (dict "root" $ "component" "hub") -> <fullname>-hub */}}
{{- define "geoml-hub.component" -}}
{{- printf "%s-%s" (include "geoml-hub.fullname" .root) .component -}}
{{- end -}}

{{- define "geoml-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "geoml-hub.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "geoml-hub.labels" -}}
{{ include "geoml-hub.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: geoml-hub
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* "geoml-hub.image" (dict "root" $ "image" .Values.hub.image) */}}
{{- define "geoml-hub.image" -}}
{{- printf "%s:%s" .image.name (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "geoml-hub.hubServiceAccount" -}}
{{- if .Values.hub.serviceAccount.create -}}
{{- default (include "geoml-hub.component" (dict "root" . "component" "hub")) .Values.hub.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.hub.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "geoml-hub.wpsServiceAccount" -}}
{{- if .Values.wps.serviceAccount.create -}}
{{- default (include "geoml-hub.component" (dict "root" . "component" "wps")) .Values.wps.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.wps.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* A secret value: the given one, else the one already in the cluster, else a fresh random one. */}}
{{- define "geoml-hub.secretValue" -}}
{{- if .value -}}
{{- .value -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 64 | lower -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The public URL of the hub (no trailing slash). */}}
{{- define "geoml-hub.publicUrl" -}}
{{- $base := trimSuffix "/" .Values.hub.baseUrl -}}
{{- if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $scheme := ternary "https" "http" (gt (len .Values.ingress.tls) 0) -}}
{{- printf "%s://%s%s" $scheme (first .Values.ingress.hosts) $base -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d%s" (include "geoml-hub.component" (dict "root" . "component" "proxy-public")) .Release.Namespace (int .Values.proxy.service.port) $base -}}
{{- end -}}
{{- end -}}

{{- define "geoml-hub.wpsUrl" -}}
{{- default (printf "%s/services/wps" (include "geoml-hub.publicUrl" .)) .Values.wps.url -}}
{{- end -}}

{{/* Egress rule: everywhere except the blocked CIDRs, on optional ports. */}}
{{- define "geoml-hub.egressAnywhere" -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        {{- with .root.Values.networkPolicy.blockedEgressCIDRs }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
  {{- end }}
{{- end -}}

{{- define "geoml-hub.egressDns" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
  to:
    - namespaceSelector: {}
      podSelector:
        matchLabels:
          k8s-app: kube-dns
{{- end -}}
