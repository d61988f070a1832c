package controllers

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
)

func TestRolledOut(t *testing.T) {
	deploy := func(st appsv1.DeploymentStatus) *appsv1.Deployment {
		d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}}
		d.Generation, st.ObservedGeneration = 3, 3
		d.Status = st
		return d
	}
	done := appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}
	cases := []struct {
		name string
		st   appsv1.DeploymentStatus
		want string // empty: rolled out
	}{
		{"rolled out", done, ""},
		{"not observed", appsv1.DeploymentStatus{ObservedGeneration: 2}, "observe the new spec"},
		{"updating", appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 1, ReadyReplicas: 3, AvailableReplicas: 3}, "1 of 2 replicas updated"},
		{"old pending", appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 2, ReadyReplicas: 3, AvailableReplicas: 3}, "1 old replicas pending"},
		{"terminating", appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, TerminatingReplicas: ptr.To[int32](1)}, "1 replicas terminating"},
		{"old ready counted", appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 3, AvailableReplicas: 3}, "old replicas still counted"},
		{"not available", appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 1, AvailableReplicas: 1}, "1 of 2 replicas available"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := deploy(tc.st)
			if tc.name == "not observed" {
				d.Status.ObservedGeneration = 2
			}
			ok, msg := rolledOut(d)
			if tc.want == "" {
				if !ok {
					t.Fatalf("not rolled out: %s", msg)
				}
				return
			}
			if ok || !strings.Contains(msg, tc.want) {
				t.Fatalf("rolledOut = %v, %q; want false, %q", ok, msg, tc.want)
			}
		})
	}
}
