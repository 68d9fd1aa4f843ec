// How kernels are launched: the attributes they combine through cudaLaunchKernelEx (a
// thread-block cluster along x, programmatic dependent launch), the device's SM count that sizes
// grids, and the switch of the few-token row clusters. CUDA host code only.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string>

namespace mq::cuda {

// Clusters of `blocks` blocks along x (the portable limit is 8).
inline cudaLaunchAttribute ClusterAttr(unsigned blocks) {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = blocks;
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}

// The kernel may start while the previous one in the stream runs (it waits with
// griddepcontrol.wait before reading that kernel's output).
inline cudaLaunchAttribute PdlAttr() {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  a.val.programmaticStreamSerializationAllowed = 1;
  return a;
}

// cudaLaunchKernelEx with the attributes above: a cluster of `cluster` blocks along x (0: no
// cluster attribute) and, when pdl, programmatic dependent launch.
template <typename Kernel, typename... Args>
cudaError_t LaunchKernelEx(Kernel kernel, dim3 grid, dim3 block, size_t smem, unsigned cluster, bool pdl,
                           cudaStream_t stream, Args... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  if (cluster > 0) attr[n++] = ClusterAttr(cluster);
  if (pdl) attr[n++] = PdlAttr();
  cfg.attrs = attr;
  cfg.numAttrs = n;
  return cudaLaunchKernelEx(&cfg, kernel, args...);
}

// SMs of the current device (read once per process; 0 without a device): how wide the decode
// kernels plan their grids and the few-token kernels spread a step.
inline int DeviceSmCount() {
  static const int n = [] {
    int dev = 0, count = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 0;
    return count;
  }();
  return n;
}

// Whether the few-token row kernels (R2 Hadamard, conv step) split a token over several blocks
// (row_cluster_plan.h); MQ_ROW_CLUSTER=0 turns it off, read once (an A/B switch for benchmarks).
inline bool RowClustersEnabled() {
  static const bool on = [] {
    const char* e = std::getenv("MQ_ROW_CLUSTER");
    return e == nullptr || std::string(e) != "0";
  }();
  return on;
}

}  // namespace mq::cuda
