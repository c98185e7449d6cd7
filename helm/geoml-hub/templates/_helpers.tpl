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
{{- randAlphaNum 64 | sha256sum -}}{{- /* 64 hex digits: JupyterHub reads JPY_COOKIE_SECRET as hex */ -}}
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

{{/* The WPS job database URL as environment entries (GEOML_WPS_DATABASE), from a Secret:
the WPS pod and its job pods get the same list. */}}
{{- define "geoml-hub.wpsDatabaseEnv" -}}
{{- $pg := .Values.postgresql -}}
{{- if $pg.enabled -}}
- name: GEOML_WPS_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (include "geoml-hub.component" (dict "root" . "component" "postgresql")) $pg.auth.existingSecret }}
      key: password
- name: GEOML_WPS_DATABASE
  value: postgresql://{{ $pg.auth.username }}:$(GEOML_WPS_DB_PASSWORD)@{{ include "geoml-hub.component" (dict "root" . "component" "postgresql") }}:5432/{{ $pg.auth.database }}
{{- else if $pg.external.existingSecret -}}
- name: GEOML_WPS_DATABASE
  valueFrom:
    secretKeyRef:
      name: {{ $pg.external.existingSecret }}
      key: {{ $pg.external.key }}
{{- end -}}
{{- end -}}

{{- define "geoml-hub.wpsJobServiceAccount" -}}
{{- include "geoml-hub.component" (dict "root" . "component" "wps-job") -}}
{{- end -}}

{{/* geoml_hub.wps.jobs.kubernetes.JobSpec of the WPS Job backend, as JSON: images, placement and limits
from wps.jobs; the WPS's volumes at the same paths (outputs read-write, shared data and
results read-only); the pod security context of the WPS. */}}
{{- define "geoml-hub.wpsJobSpec" -}}
{{- $jobs := .Values.wps.jobs -}}
{{- $sd := .Values.storage.sharedData -}}
{{- $rs := .Values.storage.results -}}
{{- $volumes := list (dict "name" "outputs" "persistentVolumeClaim" (dict "claimName" (include "geoml-hub.component" (dict "root" . "component" "wps-outputs")))) -}}
{{- $mounts := list (dict "name" "outputs" "mountPath" "/var/lib/geoml-hub/wps") -}}
{{- if $sd.enabled -}}
{{- if $sd.existingClaim -}}
{{- $volumes = append $volumes (dict "name" "geoml-data" "persistentVolumeClaim" (dict "claimName" $sd.existingClaim "readOnly" true)) -}}
{{- else -}}
{{- $volumes = append $volumes (dict "name" "geoml-data" "nfs" (dict "server" $sd.nfs.server "path" $sd.nfs.path "readOnly" true)) -}}
{{- end -}}
{{- $mounts = append $mounts (dict "name" "geoml-data" "mountPath" $sd.mountPath "readOnly" true) -}}
{{- end -}}
{{- if $rs.enabled -}}
{{- $volumes = append $volumes (dict "name" "geoml-results" "persistentVolumeClaim" (dict "claimName" (default (include "geoml-hub.component" (dict "root" . "component" "results")) $rs.existingClaim) "readOnly" true)) -}}
{{- $mounts = append $mounts (dict "name" "geoml-results" "mountPath" $rs.mountPath "readOnly" true) -}}
{{- end -}}
{{- $pullSecrets := list -}}
{{- range .Values.imagePullSecrets -}}
{{- $pullSecrets = append $pullSecrets .name -}}
{{- end -}}
{{- $env := dict -}}
{{- range $k, $v := $jobs.extraEnv -}}
{{- $_ := set $env $k (toString $v) -}}
{{- end -}}
{{- $sc := .Values.wps.podSecurityContext -}}
{{- /* geoml-hub's GPU/CPU node placement (src/geoml_hub/placement.yaml): the defaults of wps.jobs.gpu/cpu */ -}}
{{- $placement := .Files.Get "files/placement.yaml" | fromYaml -}}
{{- $spec := dict
  "namespace" .Release.Namespace
  "cpu_image" (include "geoml-hub.image" (dict "root" . "image" $jobs.cpuImage))
  "cuda_image" (include "geoml-hub.image" (dict "root" . "image" $jobs.cudaImage))
  "service_account" (include "geoml-hub.wpsJobServiceAccount" .)
  "image_pull_policy" $jobs.pullPolicy
  "image_pull_secrets" $pullSecrets
  "volumes" $volumes
  "volume_mounts" $mounts
  "default_device" $jobs.defaultDevice
  "gpu_resource" (default $placement.gpu.resource $jobs.gpu.resource)
  "gpu_node_selector" (ternary $placement.gpu.nodeSelector $jobs.gpu.nodeSelector (kindIs "invalid" $jobs.gpu.nodeSelector))
  "gpu_tolerations" (ternary $placement.gpu.tolerations $jobs.gpu.tolerations (kindIs "invalid" $jobs.gpu.tolerations))
  "cpu_node_selector" $jobs.cpu.nodeSelector
  "cpu_node_affinity" (ternary $placement.cpu.nodeAffinityTerms $jobs.cpu.nodeAffinityTerms (kindIs "invalid" $jobs.cpu.nodeAffinityTerms))
  "resources" $jobs.resources
  "backoff_limit" $jobs.backoffLimit
  "active_deadline_seconds" $jobs.activeDeadlineSeconds
  "ttl_seconds_after_finished" $jobs.ttlSecondsAfterFinished
  "shm_size" $jobs.shmSize
  "run_as_user" (int (default 1000 $sc.runAsUser))
  "run_as_group" (int (default 1000 $sc.runAsGroup))
  "fs_group" (int (default 1000 $sc.fsGroup))
  "labels" (dict "app.kubernetes.io/name" (include "geoml-hub.name" .) "app.kubernetes.io/instance" .Release.Name "app.kubernetes.io/part-of" "geoml-hub")
  "env" $env
  "env_from" (include "geoml-hub.wpsDatabaseEnv" . | fromYamlArray)
-}}
{{- toJson $spec -}}
{{- end -}}

{{/* The web map is deployed with the WPS only (it runs the WPS processes; its users' tokens
carry access:services!service=wps). */}}
{{- define "geoml-hub.mapEnabled" -}}
{{- if and .Values.map.enabled .Values.wps.enabled -}}true{{- end -}}
{{- end -}}

{{/* The map's image: map.image, or by default the WPS image (which carries Leaflet). */}}
{{- define "geoml-hub.mapImage" -}}
{{- if .Values.map.image.name -}}
{{- include "geoml-hub.image" (dict "root" . "image" .Values.map.image) -}}
{{- else -}}
{{- include "geoml-hub.image" (dict "root" . "image" (dict "name" .Values.wps.image.name "tag" (default .Values.wps.image.tag .Values.map.image.tag))) -}}
{{- end -}}
{{- end -}}

{{- define "geoml-hub.mapServiceAccount" -}}
{{- if .Values.map.serviceAccount.create -}}
{{- default (include "geoml-hub.component" (dict "root" . "component" "map")) .Values.map.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.map.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The public URL of the map (no trailing slash): the hub service route. */}}
{{- define "geoml-hub.mapUrl" -}}
{{- printf "%s/services/map" (include "geoml-hub.publicUrl" .) -}}
{{- end -}}

{{/* Where the map reaches the WPS in the cluster: its Service, with the path of the WPS's
public URL (the WPS strips that path from requests, as the proxy forwards them). */}}
{{- define "geoml-hub.wpsInternalUrl" -}}
{{- $path := trimSuffix "/" (urlParse (include "geoml-hub.wpsUrl" .)).path -}}
{{- printf "http://%s:%d%s" (include "geoml-hub.component" (dict "root" . "component" "wps")) (int .Values.wps.port) $path -}}
{{- end -}}
