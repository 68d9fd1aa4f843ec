// Launch attributes the kernels combine through cudaLaunchKernelEx: a thread-block cluster along
// x, programmatic dependent launch. CUDA host code only.
#pragma once

#include <cuda_runtime.h>

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

}  // namespace mq::cuda
