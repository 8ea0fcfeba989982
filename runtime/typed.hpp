#pragma once

#include <type_traits>

#include <caf/detail/type_list.hpp>
#include <caf/replies_to.hpp>

/// Compile-time lookups in CAF typed actor interfaces, so a caller that
/// sends a message to an actor names neither a reply type the interface
/// does not promise nor a message the actor does not take.
namespace troupe::runtime {

namespace detail {

template <class Sigs, class... In>
struct reply_of_impl {
  static_assert(sizeof...(In) < 0,
                "the actor's interface takes no such message");
};

template <class Out>
struct single_reply {
  static_assert(sizeof(Out) < 0, "expected exactly one reply type");
};

template <class Out>
struct single_reply<caf::output_tuple<Out>> {
  using type = Out;
};

template <class... Is, class Out, class... Rest, class... In>
struct reply_of_impl<
  caf::detail::type_list<caf::typed_mpi<caf::detail::type_list<Is...>, Out>,
                         Rest...>,
  In...>
  : std::conditional_t<
      std::is_same<caf::detail::type_list<Is...>,
                   caf::detail::type_list<In...>>::value,
      single_reply<Out>,
      reply_of_impl<caf::detail::type_list<Rest...>, In...>> {};

} // namespace detail

/// The reply type `Interface` (a caf::typed_actor) promises for a message
/// of the types `In...`; a compile error when it takes no such message.
template <class Interface, class... In>
using reply_of =
  typename detail::reply_of_impl<typename Interface::signatures,
                                 In...>::type;

} // namespace troupe::runtime
